"""The router's decisions without a server (issue #17): which failures fail over and why, how
long a deployment is skipped, which deployment a request goes to."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from service.domain import ChatMessage, CompletionParams
from service.errors import (
    ModelNotFound,
    NotServedUpstream,
    ServiceError,
    StreamDeadlineExceeded,
    TooManyStreams,
    UpstreamAuthFailed,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.events import Finished, Routed, StreamFailed, TextDelta, UpstreamBatch
from service.upstream import router as router_module
from service.upstream.health import (
    CooldownPolicy,
    DeploymentHealth,
    NoHealthObserver,
    State,
    failover_reason,
)
from service.upstream.router import Lane, Router
from testkit.pipelines import bounded
from testkit.services import make_settings


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UpstreamUnavailable("refused"), "connection"),
        (UpstreamUnavailable("503", upstream_status=503), "server_error"),
        (UpstreamUnavailable("307", upstream_status=307), "redirect"),
        (UpstreamTimeout("slow"), "timeout"),
        (UpstreamRateLimited("429", retry_after_seconds=3), "rate_limited"),
        (UpstreamAuthFailed("401"), "auth"),
        (UpstreamQuotaExhausted("quota"), "quota"),
        (NotServedUpstream("no /responses"), "not_served"),
        (UpstreamRejected("context too long", upstream_status=400), None),
        (UpstreamRejected("no such model", upstream_status=404), None),
        (ModelNotFound("none"), None),
        (StreamDeadlineExceeded("long"), None),
    ],
)
def test_failover_reasons(error: ServiceError, reason: str | None) -> None:
    assert failover_reason(error) == reason


def test_cooldowns_double_honour_retry_after_and_stop_at_the_longest() -> None:
    policy = CooldownPolicy(base_seconds=2, max_seconds=30)

    def between(seconds: float, low: float) -> bool:
        return low <= seconds <= low * 1.1

    assert between(policy.seconds(1, "connection", None), 2)
    assert between(policy.seconds(2, "server_error", None), 4)
    assert between(policy.seconds(3, "timeout", None), 8)
    assert between(policy.seconds(9, "timeout", None), 30)
    assert between(policy.seconds(1, "rate_limited", 20), 20)
    assert between(policy.seconds(1, "rate_limited", 1), 2)
    assert policy.seconds(1, "auth", None) == 30
    assert policy.seconds(1, "quota", None) == 30


class Changes:
    """A health observer that records the states and lets a test await one."""

    def __init__(self) -> None:
        self.seen: list[State] = []
        self._waiting: dict[State, asyncio.Event] = {}

    def state_changed(self, deployment: str, state: State) -> None:
        self.seen.append(state)
        if state in self._waiting:
            self._waiting[state].set()

    async def reached(self, state: State) -> None:
        event = self._waiting.setdefault(state, asyncio.Event())
        async with asyncio.timeout(5):
            await event.wait()


async def test_a_failed_deployment_cools_down_then_one_request_probes_it() -> None:
    changes = Changes()
    health = DeploymentHealth("a", CooldownPolicy(0.05, 1.0), changes)
    loop = asyncio.get_running_loop()
    sent_before = health.epoch
    assert health.take() is False
    health.failed(sent_before, "connection", None, loop.time())
    health.release()
    assert (health.state, health.failures, health.available) == ("cooling_down", 1, False)
    # Another request sent before the cooldown began fails too: one failure, not two.
    health.failed(sent_before, "connection", None, loop.time())
    assert health.failures == 1
    await changes.reached("probe")
    assert health.available
    probe_epoch = health.epoch
    assert health.take() is True
    assert (health.state, health.available) == ("probing", False)
    health.failed(probe_epoch, "server_error", None, loop.time())
    health.release()
    assert (health.state, health.failures) == ("cooling_down", 2)
    assert health.until - loop.time() >= 0.09  # doubled
    health.close()


async def test_a_probe_answered_makes_it_healthy_and_a_probe_abandoned_is_taken_again() -> None:
    changes = Changes()
    health = DeploymentHealth("a", CooldownPolicy(0.02, 1.0), changes)
    loop = asyncio.get_running_loop()
    health.failed(health.epoch, "rate_limited", None, loop.time())
    await changes.reached("probe")
    assert health.take() is True
    health.abandoned(probe=True)  # the client left before the deployment answered
    health.release()
    assert health.state == "probe"
    epoch = health.epoch
    assert health.take() is True
    health.succeeded(epoch, probe=True)
    health.release()
    assert (health.state, health.failures) == ("healthy", 0)
    assert changes.seen == ["cooling_down", "probe", "probing", "probe", "probing", "healthy"]


async def test_a_refused_key_is_broken_for_the_longest_cooldown() -> None:
    health = DeploymentHealth("a", CooldownPolicy(1.0, 60.0), NoHealthObserver())
    loop = asyncio.get_running_loop()
    health.failed(health.epoch, "auth", None, loop.time())
    assert health.state == "broken"
    assert health.until - loop.time() == pytest.approx(60.0, abs=0.5)
    health.close()


async def test_an_api_not_served_moves_on_without_a_cooldown() -> None:
    health = DeploymentHealth("a", CooldownPolicy(1.0, 60.0), NoHealthObserver())
    health.failed(health.epoch, "not_served", None, asyncio.get_running_loop().time())
    assert health.state == "healthy"


def router_of(*entries: dict[str, Any], **settings: Any) -> Router:
    return router_module.build(make_settings(upstreams=json.dumps(list(entries)), **settings))


def demo(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "provider": "demo", **fields}


def picks(router: Router, count: int, model: str = "m") -> list[str]:
    chosen = []
    for _ in range(count):
        lane, _ = router.choose(model, [])
        assert lane is not None
        chosen.append(lane.name)
    return chosen


def test_idle_requests_are_spread_exactly_by_weight() -> None:
    router = router_of(demo("a", weight=3), demo("b", weight=1))
    assert Counter(picks(router, 20)) == {"a": 15, "b": 5}
    # Smoothly: b is not left for the end of each cycle.
    assert picks(router, 4) == ["a", "a", "b", "a"]


def test_equal_weights_alternate() -> None:
    assert picks(router_of(demo("a"), demo("b")), 4) == ["a", "b", "a", "b"]


def lane(router: Router, name: str) -> Lane:
    (found,) = [each for each in router.lanes if each.name == name]
    return found


def test_the_least_busy_for_its_weight_is_chosen() -> None:
    router = router_of(demo("a", weight=2), demo("b", weight=1))
    lane(router, "a").health.in_flight = 3  # 1.5 per unit of weight
    lane(router, "b").health.in_flight = 1  # 1.0
    assert picks(router, 3) == ["b", "b", "b"]
    lane(router, "a").health.in_flight = 2  # as busy as b for its weight: by weight again
    assert Counter(picks(router, 3)) == {"a": 2, "b": 1}


def test_a_full_deployment_is_skipped_and_all_full_is_429() -> None:
    router = router_of(demo("a", max_concurrent=1), demo("b", max_concurrent=2))
    lane(router, "a").health.in_flight = 1
    assert picks(router, 2) == ["b", "b"]
    lane(router, "b").health.in_flight = 2
    assert router.choose("m", []) == (None, False)
    assert isinstance(router.unavailable("m"), TooManyStreams)


def test_only_deployments_serving_the_model_are_chosen() -> None:
    router = router_of(demo("a", models=["x"]), demo("b", models={"y": "y-b"}), demo("any"))
    assert set(picks(router, 4, "x")) == {"a", "any"}
    assert set(picks(router, 4, "y")) == {"b", "any"}
    assert set(picks(router, 2, "z")) == {"any"}
    only = router_of(demo("a", models=["x"]))
    assert only.choose("z", []) == (None, False)
    assert isinstance(only.unavailable("z"), ModelNotFound)


def test_tried_deployments_are_not_chosen_again_and_the_last_is_told_so() -> None:
    router = router_of(demo("a"), demo("b"))
    first, others = router.choose("m", [])
    assert first is not None
    assert others
    second, others = router.choose("m", [first])
    assert second is not None
    assert second is not first
    assert not others  # none left after it: it gets no failover timeout
    assert router.choose("m", [first, second]) == (None, False)


async def test_a_deployment_whose_cooldown_ended_is_probed_first() -> None:
    router = router_of(demo("a"), demo("b"), demo("c"))
    b = lane(router, "b")
    b.health.failed(b.health.epoch, "connection", None, asyncio.get_running_loop().time())
    assert "b" not in picks(router, 4)
    b.health._cooled(b.health.epoch)  # the cooldown's timer
    assert router.choose("m", [])[0] is b
    assert b.health.take() is True
    assert "b" not in picks(router, 4)  # one probe at a time


async def test_every_deployment_cooling_down_answers_with_the_soonest_retry() -> None:
    router = router_of(demo("a"), demo("b"), upstream_cooldown_seconds=1)
    now = asyncio.get_running_loop().time()
    for each, seconds in (("a", 7), ("b", 3)):
        health = lane(router, each).health
        health.failed(health.epoch, "rate_limited", seconds, now)
    error = router.unavailable("m")
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after_seconds in (3, 4)
    health = lane(router, "a").health
    health.failed(health.epoch, "server_error", None, now)  # not every one is rate limiting
    error = router.unavailable("m")
    assert isinstance(error, UpstreamUnavailable)
    assert error.retry_after_seconds is not None
    for deployment in router.lanes:
        deployment.health.close()


class Scripted:
    """An in-memory deployment: answers `tokens`, or never answers (`hang`); counts requests."""

    provider = "openai"
    is_demo = False

    def __init__(self, *, hang: bool = False) -> None:
        self.hang = hang
        self.requests = 0
        self.closed = 0
        self.asked = asyncio.Event()

    async def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamBatch, None]:
        self.requests += 1
        self.asked.set()
        try:
            if self.hang:
                await asyncio.Event().wait()
            yield [TextDelta(" hi")]
            yield [Finished("stop")]
        finally:
            self.closed += 1


def scripted_router(*upstreams: Scripted, timeout: float = 10.0) -> Router:
    router = router_of(
        *(demo(f"d{i}", failover_timeout_seconds=timeout) for i in range(len(upstreams)))
    )
    for each, upstream in zip(router.lanes, upstreams, strict=True):
        each.upstream = upstream  # type: ignore[assignment]
    return router


PARAMS = CompletionParams("m", (ChatMessage("user", "hi"),))


async def test_a_silent_deployment_is_left_at_its_failover_timeout() -> None:
    silent, answering = Scripted(hang=True), Scripted()
    router = scripted_router(silent, answering, timeout=0.05)
    stream = router.stream(PARAMS)
    first = await anext(stream)
    assert [type(event) for event in first] == [Routed, TextDelta]
    assert first[0] == Routed("d1", "demo")
    assert (silent.requests, silent.closed, answering.requests) == (1, 1, 1)
    assert lane(router, "d0").health.reason == "timeout"
    await stream.aclose()
    assert answering.closed == 1
    assert [each.health.in_flight for each in router.lanes] == [0, 0]
    for each in router.lanes:
        each.health.close()


async def test_the_stream_deadline_outside_ends_the_wait_and_no_deployment_is_asked() -> None:
    silent, answering = Scripted(hang=True), Scripted()
    router = scripted_router(silent, answering, timeout=10.0)
    stream = bounded(
        router.stream(PARAMS), max_seconds=60, idle_seconds=60, first_event_seconds=0.05
    )
    (failed,) = await anext(stream)
    assert isinstance(failed, StreamFailed)
    assert "no token within 0.05 s" in failed.error.message
    await stream.aclose()
    assert (silent.requests, silent.closed, answering.requests) == (1, 1, 0)
    assert [each.health.in_flight for each in router.lanes] == [0, 0]
    assert lane(router, "d0").health.state == "healthy"  # the client's bound, not its fault


async def test_cancelled_while_waiting_on_a_deployment_asks_no_other() -> None:
    silent, answering = Scripted(hang=True), Scripted()
    router = scripted_router(silent, answering, timeout=0.05)
    reading = asyncio.ensure_future(anext(router.stream(PARAMS)))
    await silent.asked.wait()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert (silent.requests, silent.closed, answering.requests) == (1, 1, 0)
    assert [each.health.in_flight for each in router.lanes] == [0, 0]


def test_the_router_is_the_demo_model_only_when_every_deployment_is() -> None:
    assert router_of(demo("a"), demo("b")).is_demo
    assert not router_of(demo("a"), {"name": "b", "base_url": "http://127.0.0.1:9/v1"}).is_demo
