"""Which failures move a request on to the next deployment, and how long a deployment that
failed is skipped (`UPSTREAMS`, issue #17).

A failure is read from the error class it was translated into at the upstream's boundary
(`service.upstream.openai_chat`), by one table, `FAILOVER_REASONS`:

    UpstreamUnavailable     connection   refused, reset, broke off, unreadable before any content
                            server_error the upstream's 5xx: skipped for at least its Retry-After
                            redirect     its 3xx (never followed)
    UpstreamTimeout         timeout      no head in time, 408, or no first token within
                                         FAILOVER_TIMEOUT_SECONDS
    UpstreamRateLimited     rate_limited 429: skipped for at least its Retry-After
    UpstreamAuthFailed      auth         401, 403: broken, skipped for the longest cooldown
    UpstreamQuotaExhausted  quota        429 insufficient_quota: broken too
    NotServedUpstream       not_served   404 for a whole API (/v1/responses): moved on, not
                                         cooled down (it serves the other APIs)

Anything else (`UpstreamRejected`: 400, 404 for a model, 422, a context too long) is the
request's own fault: another deployment would say the same, so it is answered as it is.

Each deployment's `DeploymentHealth` is a small state machine, driven by the outcomes of the
requests sent to it and by one timer per cooldown (never per request):

    healthy ──failure──▶ cooling_down (or broken) ──timer──▶ probe ──chosen──▶ probing
       ▲                        ▲                                                │
       └────────success─────────┼──────────────────────────────────────────────┤
                                └─────────────failure (the cooldown doubles)─────┘

A cooldown lasts `UPSTREAM_COOLDOWN_SECONDS`, doubled with each failure in a row, at most
`UPSTREAM_MAX_COOLDOWN_SECONDS` (that outright for a broken deployment), at least the upstream's
`Retry-After`, plus up to a tenth more, at random, so that replicas sharing cooldowns
(`service.upstream.shared_health`) do not all probe at once. When it ends, exactly one request
probes the deployment; until that one has its answer no other is sent there. Failures reported
by requests that were sent before the cooldown began (their epoch is older) neither grow nor
renew it: a burst of requests failing together counts as one failure.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Literal, Protocol

from service.errors import (
    NotServedUpstream,
    ServiceError,
    UpstreamAuthFailed,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)

logger = logging.getLogger("service.upstream")

State = Literal["healthy", "cooling_down", "broken", "probe", "probing"]
STATES: tuple[State, ...] = ("healthy", "cooling_down", "broken", "probe", "probing")
REASONS = (
    "connection",
    "server_error",
    "redirect",
    "timeout",
    "rate_limited",
    "auth",
    "quota",
    "not_served",
)
# The error classes a request fails over on, and the reason each is counted under.
FAILOVER_REASONS: dict[type[ServiceError], str] = {
    UpstreamUnavailable: "connection",
    UpstreamTimeout: "timeout",
    UpstreamRateLimited: "rate_limited",
    UpstreamAuthFailed: "auth",
    UpstreamQuotaExhausted: "quota",
    NotServedUpstream: "not_served",
}
# Reasons that say the deployment cannot serve anyone for now: the longest cooldown at once.
BROKEN_REASONS = frozenset({"auth", "quota"})
# Reasons that say nothing about the deployment's health.
NOT_COOLED = frozenset({"not_served"})
JITTER = 0.1


def retry_after_of(error: ServiceError) -> int | None:
    """How long the deployment asked to be left alone, if it said: a 429's `Retry-After` (the
    client is told it too) or a 5xx's (kept for the cooldown only, `UpstreamUnavailable`)."""
    if isinstance(error, UpstreamUnavailable) and error.upstream_retry_after_seconds is not None:
        return error.upstream_retry_after_seconds
    return error.retry_after_seconds


def failover_reason(error: ServiceError) -> str | None:
    """Why a request that failed with `error` before its first content moves on to the next
    deployment; None when it must not (the request's own fault)."""
    reason = FAILOVER_REASONS.get(type(error))
    if reason == "connection":
        status = error.upstream_status if isinstance(error, UpstreamUnavailable) else None
        if status is not None:
            return "redirect" if status < 400 else "server_error"
    return reason


class HealthObserver(Protocol):
    """Told of every change of a deployment's state (`/metrics`); must not raise."""

    def state_changed(self, deployment: str, state: State) -> None: ...


class NoHealthObserver:
    def state_changed(self, deployment: str, state: State) -> None:
        return None


class CooldownPolicy:
    """How long a failure keeps a deployment out (the module docstring)."""

    def __init__(self, base_seconds: float, max_seconds: float) -> None:
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds

    def seconds(self, failures: int, reason: str, retry_after_seconds: float | None) -> float:
        if reason in BROKEN_REASONS:
            return self.max_seconds
        backoff = min(self.max_seconds, self.base_seconds * 2.0 ** min(failures - 1, 30))
        return max(backoff, retry_after_seconds or 0.0) * (1 + JITTER * random.random())  # noqa: S311


class DeploymentHealth:
    """One deployment's state, its streams in flight, and its cooldown timer."""

    __slots__ = (
        "_observer",
        "_on_change",
        "_policy",
        "_timer",
        "epoch",
        "failures",
        "in_flight",
        "name",
        "reason",
        "state",
        "until",
    )

    def __init__(
        self,
        name: str,
        policy: CooldownPolicy,
        observer: HealthObserver,
        on_change: Callable[[DeploymentHealth], None] | None = None,
    ) -> None:
        self.name = name
        self._policy = policy
        self._observer = observer
        # Told of the changes this process made itself, to share them (`shared_health`).
        self._on_change = on_change
        self.state: State = "healthy"
        self.failures = 0
        # Bumped when a cooldown begins: outcomes of requests sent before it are stale.
        self.epoch = 0
        self.in_flight = 0
        # When the cooldown ends (the loop's clock), and why it began.
        self.until = 0.0
        self.reason = ""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def available(self) -> bool:
        """Whether a request may be sent here now (a probe counts)."""
        state = self.state
        return state == "healthy" or state == "probe"

    def take(self) -> bool:
        """A request is sent here; True when it is the probe."""
        self.in_flight += 1
        if self.state == "probe":
            self._set("probing")
            return True
        return False

    def release(self) -> None:
        """A request sent here (`take`) has ended, or moved on."""
        self.in_flight -= 1

    def succeeded(self, epoch: int, probe: bool) -> None:
        """A request sent at `epoch` had its first content (or an answer that is the
        request's own fault): the deployment answers."""
        if epoch != self.epoch:
            return
        self.failures = 0
        if probe and self.state == "probing":
            self._set("healthy")
            logger.info("upstream deployment %s answers again", self.name)
            self._changed()

    def abandoned(self, probe: bool) -> None:
        """The probe ended with no verdict (the client left): the next request probes."""
        if probe and self.state == "probing":
            self._set("probe")

    def failed(
        self, epoch: int, reason: str, retry_after_seconds: float | None, loop_time: float
    ) -> None:
        """A request sent at `epoch` failed before its first content, for `reason`."""
        if reason in NOT_COOLED or epoch != self.epoch:
            return
        self.failures += 1
        seconds = self._policy.seconds(self.failures, reason, retry_after_seconds)
        self._cool_down(loop_time + seconds, reason)
        logger.warning(
            "upstream deployment %s failed (%s): skipped for %.1f s", self.name, reason, seconds
        )
        self._changed()

    def shared_cooldown(self, until: float, failures: int, reason: str) -> None:
        """Another replica saw this deployment fail: skipped here too until `until` (the loop's
        clock), unless a longer cooldown already holds."""
        if self.state in ("cooling_down", "broken") and self.until >= until:
            return
        self.failures = max(self.failures, failures)
        self._cool_down(until, reason)

    def shared_recovery(self) -> None:
        """Another replica's probe had its answer: the deployment is healthy again here too."""
        if self.state == "healthy":
            return
        self.epoch += 1  # what was sent before says nothing newer
        self.failures = 0
        self._cancel_timer()
        self._set("healthy")

    def _cool_down(self, until: float, reason: str) -> None:
        self.epoch += 1
        self.until = until
        self.reason = reason
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(until, self._cooled, self.epoch)
        self._set("broken" if reason in BROKEN_REASONS else "cooling_down")

    def _cooled(self, epoch: int) -> None:
        self._timer = None
        if epoch == self.epoch and self.state in ("cooling_down", "broken"):
            self._set("probe")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set(self, state: State) -> None:
        self.state = state
        try:
            self._observer.state_changed(self.name, state)
        except Exception:
            logger.exception("upstream health observer failed")

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    def close(self) -> None:
        self._cancel_timer()
