"""Per-stream measurement: an observer that passes upstream events through untouched.

Definitions (all from `time.perf_counter`):

- `ttft_ms`: request received -> first non-empty text handed to the response. Nothing is queued
  between here and the socket write, so this is the time the client waits, minus network.
- `upstream_ttft_ms`: upstream request started -> first text received from it.
- `output_tokens`: the upstream's `completion_tokens` when it reports usage, else the number of
  text deltas (one per token for OpenAI-compatible servers).
- Tokens that arrive in one upstream read (one batch, issue #16) share its time: nothing tells
  them apart, and a rate computed from the microseconds between handling them would be noise.
- `tokens_per_second`: decode rate of the visible answer after its first token,
  `(visible tokens - 1) / (last text - first text)`, where visible tokens leave out the hidden
  reasoning tokens a reasoning model produces before its first text; `None` with fewer than two.
- `duration_ms`: request received -> stream ended.

Each stream ends with one structured log line (logger `service.streams`, the summary in
`record.stream`): ids, outcome, the figures above, and never any prompt or answer text. The
outcome is decided when the response has ended (`finish`, called by `ChatStreamResponse`), from
what the transport saw and what the upstream did (`service.outcomes`):

- `completed`: everything, end marker included, was handed to the client;
- `cancelled`: the client left, or stopped reading (`error_type` `client_send_timeout`);
- `error`: the upstream failed (before or after the first token), the server shut down
  (`server_shutting_down`), or the service failed (`internal_error`).

Observers (`StreamObserver`: the Prometheus metrics, traces) are told when a stream opens and
when it has finished, once each; they read the record and never change the stream. Nothing here
does work per token beyond the timestamps above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from service.events import (
    Failed,
    Finished,
    Relayed,
    Routed,
    StreamMetrics,
    TextDelta,
    UpstreamBatch,
    Usage,
    UsageReported,
)
from service.outcomes import Delivery, Outcome, outcome_of

stream_logger = logging.getLogger("service.streams")
logger = logging.getLogger("service.metrics")


class StreamObserver(Protocol):
    """Watches streams: told once when one opens and once when it has finished (its record
    complete). Must not raise; a failure is logged and the stream goes on regardless."""

    def stream_opened(self, recorder: StreamRecorder) -> None: ...

    def stream_finished(self, recorder: StreamRecorder) -> None: ...


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class StreamRecorder:
    """Mutable record of one stream; the relay feeds it (`record`) and reads `metrics()`."""

    def __init__(
        self,
        *,
        stream_id: str,
        model: str,
        provider: str,
        received_at: float,
        endpoint: str = "/api/chat/stream",
        observers: tuple[StreamObserver, ...] = (),
    ) -> None:
        self.stream_id = stream_id
        self.model = model
        self.provider = provider
        # The deployment that answered, when the service routes over several (`UPSTREAMS`):
        # told by the router's `Routed` event, which also sets `provider` to the deployment's.
        self.deployment: str | None = None
        # The route that served it (its template): the native stream, the UI's, or an OpenAI
        # API (`/v1/...`). A bounded label for metrics, like `wire_format`.
        self.endpoint = endpoint
        # The wire format's name (`sse`, `ndjson`, ...), set by the response that sends it.
        self.wire_format = ""
        self.observers = observers
        self.received_at = received_at
        self.upstream_started_at: float | None = None
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.text_deltas = 0
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.error_type: str | None = None
        self.outcome: Outcome | None = None
        self.delivery: Delivery | None = None
        self.ended_at: float | None = None
        self.heartbeats = 0
        self._tell(lambda observer: observer.stream_opened(self))

    def count_heartbeat(self) -> None:
        """The response sent a heartbeat (`ChatStreamResponse`'s `on_heartbeat`)."""
        self.heartbeats += 1

    def _tell(self, notify: Callable[[StreamObserver], None]) -> None:
        for observer in self.observers:
            try:
                notify(observer)
            except Exception:
                # Metrics watch the stream; they never end it.
                logger.exception("stream observer %s failed", type(observer).__name__)

    def record(self, batch: UpstreamBatch) -> None:
        """Note what the events of one upstream read tell; the relay calls this for every
        batch, in order. The events of one read arrived together: one timestamp serves them.

        A method call rather than an observing generator layer: each `async for` layer costs
        a few microseconds per token (issue #12)."""
        outputs = 0
        for event in batch:
            if type(event) is TextDelta:  # the hot path first
                outputs += 1
            elif isinstance(event, Relayed):
                outputs += event.output
                if event.finish_reason is not None:
                    self.finish_reason = event.finish_reason
                if event.usage is not None:
                    self.usage = event.usage
            elif isinstance(event, UsageReported):
                self.usage = event.usage
            elif isinstance(event, Failed):
                self.error_type = event.error.error_type
            elif isinstance(event, Finished):
                self.finish_reason = event.reason
            elif type(event) is Routed:  # once, first, with UPSTREAMS only
                self.deployment = event.deployment
                self.provider = event.provider
        if outputs:
            now = time.perf_counter()
            if self.first_text_at is None:
                self.first_text_at = now
            self.last_text_at = now
            self.text_deltas += outputs

    @property
    def output_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage else self.text_deltas

    def decode(self) -> tuple[float, int] | None:
        """(seconds from the first text to the last, visible tokens after the first), the
        decode phase `tokens_per_second` measures; None with fewer than two visible tokens."""
        first, last = self.first_text_at, self.last_text_at
        visible = self.output_tokens - (self.usage.reasoning_tokens if self.usage else 0)
        if first is None or last is None or last <= first or visible < 2:
            return None
        return last - first, visible - 1

    def metrics(self) -> StreamMetrics:
        end = self.ended_at if self.ended_at is not None else time.perf_counter()
        first = self.first_text_at
        decode = self.decode()
        tokens_per_second = None if decode is None else round(decode[1] / decode[0], 3)
        return StreamMetrics(
            ttft_ms=None if first is None else _ms(first - self.received_at),
            upstream_ttft_ms=(
                None
                if first is None or self.upstream_started_at is None
                else _ms(first - self.upstream_started_at)
            ),
            tokens_per_second=tokens_per_second,
            output_tokens=self.output_tokens,
            duration_ms=_ms(end - self.received_at),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "endpoint": self.endpoint,
            "provider": self.provider,
            # Only with UPSTREAMS: a single upstream's line is as it was.
            **({} if self.deployment is None else {"deployment": self.deployment}),
            "model": self.model,
            "outcome": self.outcome,
            "finish_reason": self.finish_reason,
            "error_type": self.error_type,
            "delivered_text_deltas": self.text_deltas,
            "usage": self.usage.as_dict() if self.usage else None,
            **self.metrics().as_dict(),
        }

    def finish(self, delivery: Delivery) -> None:
        """Record how the response ended and log the stream; only the first call counts."""
        if self.outcome is not None:
            return
        self.outcome, self.error_type = outcome_of(delivery, self.error_type)
        self.delivery = delivery
        self.ended_at = time.perf_counter()
        stream_logger.info("stream %s", self.outcome, extra={"stream": self.summary()})
        self._tell(lambda observer: observer.stream_finished(self))
