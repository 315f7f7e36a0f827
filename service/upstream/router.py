"""The router over several deployments (`UPSTREAMS`, issue #17): a `ChatUpstream` made of
`ChatUpstream`s, chosen per request, failing over before the first content.

    Router.stream(params) ─▶ RoutedStream: choose a deployment ─▶ its own stream(params)
                                  ▲                                    │ first batch
                                  └──── a failover reason, nothing said ┘ (service.upstream.health)
                             first content (or the request's own error): that deployment's
                             generator serves the rest, batch for batch, uninspected

- **Choice** (`Router.choose`): among the deployments that serve the model, are available
  (healthy, or a cooldown just ended: that request probes it, first) and are below their
  `max_concurrent`, the least busy for its weight (streams in flight / `weight`); a tie (every
  idle deployment, say) goes by smooth weighted round-robin, so idle traffic is spread exactly
  by weight, and busy traffic keeps streams in flight in proportion to the weights. Streams in
  flight are this process's own (never shared, unlike cooldowns): `max_concurrent` and the
  load are per process (docs/upstreams.md says why that is enough).
- **Failover**: before the first content a deployment's stream can only say `[Failed(error)]`
  (`ChatUpstream`'s contract): when `failover_reason` names a reason, the next deployment is
  asked, in the same task, with nothing sent to the client but heartbeats; when every
  deployment has been tried (or is cooling down), the last error is the answer. A deployment
  that sends no first token within its `FAILOVER_TIMEOUT_SECONDS` is left for the next one,
  unless no other is left to try: that one gets the rest of the stream's first-token bound
  (`service.deadline`, outside, which bounds the whole wait).
- **After the first content**, the deployment's own generator is handed out: `RoutedStream.
  __anext__` returns its `__anext__()` as it is, so a token costs one method call more than
  with one upstream, and nothing about a stream is read after its first batch; a stream pushed
  from the socket (`service.push`) is the deployment's own, with nothing of the router's
  between the read and the client. A failure then
  is the stream's, in-band; it neither moves the stream nor cools the deployment down.
- **Cancellation**: every step runs in the task that reads the stream; a client that leaves
  cancels it at whichever `await` it is in, and no further deployment is asked.
- **The SDK's retries**: off on each deployment of a list of several (`service.upstream.
  deployments`): the next deployment answers sooner than the same one after a backoff.

The first batch a routed stream yields opens with the deployment's `Routed` event, which names
it in the `start` event, the log line, the span and `/metrics` (`service.relay`,
`service.metrics`). The state each deployment's outcomes drive (cooldowns, probes) is
`service.upstream.health`; with `REDIS_URL` it is shared between replicas
(`service.upstream.shared_health`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from service.domain import CompletionParams, PassthroughParams
from service.errors import (
    ModelNotFound,
    ServiceError,
    TooManyStreams,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.events import Failed, Routed, UpstreamBatch
from service.push import UpstreamSink, pushable
from service.upstream import openai_events
from service.upstream.base import ChatUpstream
from service.upstream.deployments import Deployment
from service.upstream.health import (
    CooldownPolicy,
    DeploymentHealth,
    HealthObserver,
    State,
    failover_reason,
    retry_after_of,
)
from service.upstream.providers import PROVIDERS, ROUTER

if TYPE_CHECKING:
    from service.settings import Settings
    from service.upstream.shared_health import SharedHealth

logger = logging.getLogger("service.upstream")


class RouterObserver(HealthObserver, Protocol):
    """Watches the router (`/metrics`): every request sent to a deployment and its end, every
    failover (a request leaving a deployment for another one, told as the other is chosen),
    every change of state. Called a few times per request, never per token; must not raise."""

    def sent(self, deployment: str) -> None: ...

    def ended(self, deployment: str) -> None: ...

    def failed_over(self, deployment: str, reason: str) -> None: ...


class NoRouterObserver:
    def sent(self, deployment: str) -> None:
        return None

    def ended(self, deployment: str) -> None:
        return None

    def failed_over(self, deployment: str, reason: str) -> None:
        return None

    def state_changed(self, deployment: str, state: State) -> None:
        return None


class Lane:
    """One deployment as the router keeps it: its upstream, its health, its share of the
    round-robin."""

    __slots__ = (
        "current",
        "deployment",
        "failover_timeout",
        "health",
        "max_concurrent",
        "models",
        "name",
        "routed",
        "upstream",
        "weight",
    )

    def __init__(
        self, deployment: Deployment, upstream: ChatUpstream, health: DeploymentHealth
    ) -> None:
        self.deployment = deployment
        self.upstream = upstream
        self.health = health
        self.name = deployment.name
        self.models = deployment.models
        self.weight = deployment.weight
        self.max_concurrent = deployment.max_concurrent
        self.failover_timeout = deployment.failover_timeout_seconds
        self.routed = Routed(deployment.name, deployment.provider)
        # Smooth weighted round-robin (nginx's): the lane with the highest `current` is taken.
        self.current = 0.0

    def serves(self, model: str) -> bool:
        models = self.models
        return models is None or model in models

    def has_room(self) -> bool:
        """Below `max_concurrent`, counting this process's streams only (module docstring)."""
        limit = self.max_concurrent
        return limit is None or self.health.in_flight < limit


class Router:
    """`ChatUpstream` over the deployments of `UPSTREAMS`; see the module docstring."""

    provider = ROUTER

    def __init__(
        self,
        lanes: list[Lane],
        default_model: str,
        observer: RouterObserver,
        shared: SharedHealth | None = None,
    ) -> None:
        self.lanes = lanes
        # Canned answers only when every deployment is the demo model (`/healthz`).
        self.is_demo = all(lane.upstream.is_demo for lane in lanes)
        self._default_model = default_model
        self.observer = observer
        self._shared = shared

    def resolve_model(self, requested: str | None) -> str:
        return requested or self._default_model

    def startup_notice(self) -> tuple[int, str]:
        described = ", ".join(f"{lane.name} ({lane.deployment.provider})" for lane in self.lanes)
        shared = ", cooldowns shared through Redis" if self._shared is not None else ""
        return logging.INFO, (
            f"routing over {len(self.lanes)} upstream deployments: {described}; default model "
            f"{self._default_model}{shared}"
        )

    async def start(self) -> None:
        for lane in self.lanes:
            await lane.upstream.start()
        if self._shared is not None:
            await self._shared.start()

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()
        for lane in self.lanes:
            lane.health.close()
            await lane.upstream.aclose()

    def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamBatch, None]:
        return RoutedStream(self, params, timed=True)

    def passthrough(self, params: PassthroughParams) -> AsyncGenerator[UpstreamBatch, None]:
        # A whole answer is its first batch: no failover timeout cuts it (the SDK's read
        # timeout still bounds its head and each read).
        return RoutedStream(self, params, timed=params.stream)

    # -- choosing ----------------------------------------------------------------------------

    def choose(self, model: str, tried: list[Lane]) -> tuple[Lane | None, bool]:
        """The deployment to send a request for `model` to, none of `tried`, and whether
        another would have been eligible too (see the module docstring)."""
        best: list[Lane] = []
        best_load = math.inf
        probe: Lane | None = None
        eligible = 0
        for lane in self.lanes:
            health = lane.health
            if not health.available or lane in tried or not lane.serves(model):
                continue
            if not lane.has_room():
                continue
            eligible += 1
            if health.state == "probe":  # a cooldown ended: the first request probes it
                probe = probe or lane
                continue
            load = health.in_flight / lane.weight
            if load < best_load:
                best_load = load
                best = [lane]
            elif load == best_load:
                best.append(lane)
        if probe is not None:
            return probe, eligible > 1
        if len(best) <= 1:
            return (best[0] if best else None), eligible > 1
        chosen = best[0]
        total = 0.0
        for lane in best:
            lane.current += lane.weight
            total += lane.weight
            if lane.current > chosen.current:
                chosen = lane
        chosen.current -= total
        return chosen, True

    def unavailable(self, model: str) -> ServiceError:
        """The answer when no deployment may be asked for `model` at all."""
        serving = [lane for lane in self.lanes if lane.serves(model)]
        if not serving:
            return ModelNotFound(
                f"no upstream deployment serves the model {model[:200]!r}", param="model"
            )
        cooling = [lane for lane in serving if not lane.health.available]
        if len(cooling) < len(serving):  # the others are full
            return TooManyStreams(
                f"every upstream deployment serving {model[:200]!r} is at its max_concurrent",
                retry_after_seconds=1,
            )
        now = asyncio.get_running_loop().time()
        wait = max(1, math.ceil(min(lane.health.until for lane in cooling) - now))
        if all(lane.health.reason == "rate_limited" for lane in cooling):
            return UpstreamRateLimited(
                "every upstream deployment is rate limiting requests", retry_after_seconds=wait
            )
        error = UpstreamUnavailable("every upstream deployment is cooling down after failures")
        error.retry_after_seconds = wait
        return error

    # -- /v1/models ----------------------------------------------------------------------------

    async def list_models(self) -> list[dict[str, Any]]:
        """The union of the deployments' models, in their order: those an entry lists (asked of
        no one), and what each deployment without a list answers. A deployment that fails is
        left out; if every one asked fails and none lists its models, the first error."""
        listed: list[list[dict[str, Any]]] = []
        asked = [lane for lane in self.lanes if lane.models is None]
        answers = await asyncio.gather(
            *(lane.upstream.list_models() for lane in asked), return_exceptions=True
        )
        by_lane = dict(zip((lane.name for lane in asked), answers, strict=True))
        failures: list[BaseException] = []
        for lane in self.lanes:
            if lane.models is not None:
                owner = lane.deployment.provider
                listed.append([openai_events.model_entry(model, owner) for model in lane.models])
                continue
            answer = by_lane[lane.name]
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                logger.warning(
                    "upstream deployment %s did not list its models: %s", lane.name, answer
                )
                failures.append(answer)
                continue
            listed.append(answer)
        if not listed and failures:
            raise failures[0]
        seen: set[str] = set()
        union = []
        for models in listed:
            for entry in models:
                if entry["id"] not in seen:
                    seen.add(entry["id"])
                    union.append(entry)
        return union


# The states of a routed stream.
_FRESH, _OPENING, _ROUTED, _DONE = range(4)


class RoutedStream(AsyncGenerator[UpstreamBatch, None]):
    """One request's stream: its first batch found by `_first` (choice and failover), every
    later one straight from the chosen deployment's own generator (the module docstring). An
    async generator by protocol, so the layers above (`service.deadline`, the relay) treat it
    as any upstream's stream: `aclose` releases the deployment, and closes its stream."""

    __slots__ = (
        "_expired",
        "_inner",
        "_lane",
        "_params",
        "_probe",
        "_router",
        "_state",
        "_timed",
    )

    def __init__(
        self, router: Router, params: CompletionParams | PassthroughParams, *, timed: bool
    ) -> None:
        self._router = router
        self._params = params
        self._timed = timed
        self._state = _FRESH
        self._inner: AsyncGenerator[UpstreamBatch, None] | None = None
        self._lane: Lane | None = None
        self._probe = False
        self._expired = False

    def __anext__(self) -> Coroutine[Any, Any, UpstreamBatch]:
        inner = self._inner
        if inner is not None:
            # The hot path: the deployment's own read, with no frame of this class around it.
            return inner.__anext__()
        if self._state == _FRESH:
            self._state = _OPENING
            return self._first()
        return _exhausted()

    def asend(self, value: None) -> Coroutine[Any, Any, UpstreamBatch]:
        return self.__anext__()

    # -- pushing (`service.push.PushSource`): the chosen deployment's own ---------------------

    def push(self, sink: UpstreamSink) -> bool:
        inner = pushable(self._inner)
        return inner is not None and inner.push(sink)

    def pause(self) -> None:
        inner = pushable(self._inner)
        if inner is not None:
            inner.pause()

    def resume(self) -> None:
        inner = pushable(self._inner)
        if inner is not None:
            inner.resume()

    async def athrow(self, *arguments: Any) -> UpstreamBatch:
        await self.aclose()
        raise arguments[1] if len(arguments) > 1 and arguments[1] is not None else arguments[0]

    async def aclose(self) -> None:
        self._state = _DONE
        inner, self._inner = self._inner, None
        self._release()
        if inner is not None:
            await inner.aclose()

    def __del__(self) -> None:
        # Never closed (its consumer was dropped): the deployment's count must not keep it.
        self._release()

    def _release(self) -> None:
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.health.release()
            lane.health.abandoned(self._probe)
            self._router.observer.ended(lane.name)

    def _open_on(self, lane: Lane) -> AsyncGenerator[UpstreamBatch, None]:
        params = self._params
        models = lane.models
        model = params.model if models is None else models[params.model]
        if isinstance(params, CompletionParams):
            if model != params.model:
                params = CompletionParams(
                    model, params.messages, params.temperature, params.max_tokens
                )
            return lane.upstream.stream(params)
        if model != params.model:
            params = PassthroughParams(params.api, params.body, model, params.stream)
        return lane.upstream.passthrough(params)

    async def _first(self) -> UpstreamBatch:
        router = self._router
        observer = router.observer
        model = self._params.model
        loop = asyncio.get_running_loop()
        tried: list[Lane] = []
        last: Lane | None = None
        error: ServiceError | None = None
        # Why the last deployment was left: a failover once another one is asked, not before
        # (the last one's failure, with none left to try, is the answer).
        reason: str | None = None
        while True:
            lane, others = router.choose(model, tried)
            if lane is None:
                self._state = _DONE
                failed = Failed(error or router.unavailable(model))
                return [failed] if last is None else [last.routed, failed]
            if last is not None and reason is not None:
                observer.failed_over(last.name, reason)
            tried.append(lane)
            last = lane
            health = lane.health
            epoch = health.epoch
            self._probe = health.take()
            self._lane = lane
            observer.sent(lane.name)
            inner = self._open_on(lane)
            seconds = lane.failover_timeout if self._timed and others else None
            try:
                if seconds is None:
                    batch = await anext(inner)
                else:
                    batch = await self._within(inner, seconds, loop)
            except StopAsyncIteration:
                batch = [Failed(UpstreamUnavailable("the upstream ended without answering"))]
            except BaseException:
                self._release()
                await inner.aclose()
                raise
            first = batch[0]
            reason = failover_reason(first.error) if type(first) is Failed else None
            if reason is None:
                health.succeeded(epoch, self._probe)
                self._probe = False
                self._inner = inner
                self._state = _ROUTED
                return [lane.routed, *batch]
            assert isinstance(first, Failed)
            error = first.error
            health.failed(epoch, reason, retry_after_of(error), loop.time())
            self._probe = False  # the probe has its verdict
            self._release()
            await inner.aclose()

    async def _within(
        self,
        inner: AsyncGenerator[UpstreamBatch, None],
        seconds: float,
        loop: asyncio.AbstractEventLoop,
    ) -> UpstreamBatch:
        """The first batch of `inner`, or a timeout's `Failed` past `seconds`. A timer that
        cancels the read, taken back once turned into the `Failed` (as `asyncio.timeout` does,
        and `service.deadline`): a third of its cost, once per request."""
        task = asyncio.current_task(loop)
        assert task is not None
        self._expired = False
        timer = loop.call_at(loop.time() + seconds, self._expire, task)
        try:
            return await anext(inner)
        except asyncio.CancelledError:
            if self._expired and task.uncancel() == 0:  # only the timer cancelled it
                return [Failed(UpstreamTimeout(f"the upstream sent no token within {seconds:g} s"))]
            raise
        finally:
            timer.cancel()

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired = True
        task.cancel()


async def _exhausted() -> UpstreamBatch:
    raise StopAsyncIteration


def build(
    settings: Settings,
    on_retry: Callable[[], None] | None = None,
    observer: RouterObserver | None = None,
) -> Router:
    """The provider table's constructor (`service.upstream.providers`): each deployment built
    by its own provider's, from its own settings (`service.upstream.deployments`)."""
    watching: RouterObserver = observer or NoRouterObserver()
    policy = CooldownPolicy(
        settings.upstream_cooldown_seconds, settings.upstream_max_cooldown_seconds
    )
    shared: SharedHealth | None = None
    if settings.redis_url is not None:
        from service.upstream.shared_health import SharedHealth  # redis only when configured

        shared = SharedHealth(settings)
    lanes = []
    for deployment in settings.deployments:
        module = importlib.import_module(PROVIDERS[deployment.provider].module)
        upstream: ChatUpstream = module.build(deployment.settings, on_retry)
        health = DeploymentHealth(
            deployment.name,
            policy,
            watching,
            on_change=shared.publish if shared is not None else None,
        )
        lanes.append(Lane(deployment, upstream, health))
        watching.state_changed(deployment.name, "healthy")
    if shared is not None:
        shared.watch({lane.name: lane.health for lane in lanes})
    return Router(lanes, settings.model_name, watching, shared)
