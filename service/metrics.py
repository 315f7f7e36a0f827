"""Per-stream measurement: an observer that passes upstream events through untouched.

Definitions (all from `time.perf_counter`):

- `ttft_ms`: request received -> first non-empty text handed to the response. Nothing is queued
  between here and the socket write, so this is the time the client waits, minus network.
- `upstream_ttft_ms`: upstream request started -> first text received from it.
- `output_tokens`: the upstream's `completion_tokens` when it reports usage, else the number of
  text deltas (one per token for OpenAI-compatible servers).
- `tokens_per_second`: decode rate after the first token, `(output_tokens - 1) / (last text -
  first text)`; `None` with fewer than two tokens.
- `duration_ms`: request received -> stream ended.

Each stream ends with one structured log line (logger `service.streams`, the summary in
`record.stream`): ids, outcome (`completed`, `cancelled`, `error`), the figures above, and never
any prompt or answer text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Literal

from service.events import Failed, StreamMetrics, TextDelta, UpstreamEvent, Usage, UsageReported

Outcome = Literal["completed", "cancelled", "error"]

stream_logger = logging.getLogger("service.streams")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class StreamRecorder:
    """Mutable record of one stream; `observe` feeds it, the relay reads `metrics()`."""

    def __init__(self, *, stream_id: str, model: str, provider: str, received_at: float) -> None:
        self.stream_id = stream_id
        self.model = model
        self.provider = provider
        self.received_at = received_at
        self.upstream_started_at: float | None = None
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.text_deltas = 0
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.error_type: str | None = None
        self.outcome: Outcome | None = None
        self.ended_at: float | None = None

    @property
    def output_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage else self.text_deltas

    def metrics(self) -> StreamMetrics:
        end = self.ended_at if self.ended_at is not None else time.perf_counter()
        first, last = self.first_text_at, self.last_text_at
        tokens_per_second = None
        if first is not None and last is not None and last > first and self.output_tokens > 1:
            tokens_per_second = round((self.output_tokens - 1) / (last - first), 3)
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
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "finish_reason": self.finish_reason,
            "error_type": self.error_type,
            "delivered_text_deltas": self.text_deltas,
            "usage": self.usage.as_dict() if self.usage else None,
            **self.metrics().as_dict(),
        }

    def end(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.ended_at = time.perf_counter()
        stream_logger.info("stream %s", outcome, extra={"stream": self.summary()})


async def observe(
    events: AsyncGenerator[UpstreamEvent, None], recorder: StreamRecorder
) -> AsyncGenerator[UpstreamEvent, None]:
    """Yield `events` unchanged while recording them; the stream is logged when this ends.

    Ending without exhaustion (the consumer closed or cancelled it) is a cancelled stream.
    """
    recorder.upstream_started_at = time.perf_counter()
    outcome: Outcome = "cancelled"
    try:
        async with aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    now = time.perf_counter()
                    if recorder.first_text_at is None:
                        recorder.first_text_at = now
                    recorder.last_text_at = now
                    recorder.text_deltas += 1
                elif isinstance(event, UsageReported):
                    recorder.usage = event.usage
                elif isinstance(event, Failed):
                    outcome = "error"
                    recorder.error_type = event.error.error_type
                else:
                    recorder.finish_reason = event.reason
                yield event
        if outcome != "error":
            outcome = "completed"
    finally:
        recorder.end(outcome)
