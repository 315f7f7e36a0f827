"""Turns what the model did (upstream events) into what the client is told (response events).

`StreamStarted` is held back until the upstream has produced its first text (or reasoning) or
finish, so that
the first response event tells whether the upstream accepted the request: a `StreamFailed` first
means nothing was said yet, and the response can still be a real HTTP error (`service.http`).
`StreamEnded` combines the finish reason, the usage chunk (which comes after the finish) and the
recorder's metrics, so it is sent once the upstream stream is over.

A `Relayed` upstream event (the OpenAI-compatible routes) passes through like text; its finish
reason and usage were recorded by the observer, which the `StreamEnded` then reports.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.events import (
    Failed,
    Finished,
    ReasoningDelta,
    Relayed,
    ResponseEvent,
    StreamEnded,
    StreamFailed,
    StreamStarted,
    TextDelta,
    UpstreamEvent,
    Usage,
    UsageReported,
)
from service.metrics import StreamRecorder

# A stream that ends with `[DONE]` but no finish reason (some compatible servers) ended normally.
_DEFAULT_FINISH_REASON = "stop"


async def relay(
    events: AsyncGenerator[UpstreamEvent, None], recorder: StreamRecorder
) -> AsyncGenerator[ResponseEvent, None]:
    started = StreamStarted(recorder.stream_id, recorder.model)
    sent_start = False
    finish_reason: str | None = None
    usage: Usage | None = None
    async with aclosing(events):
        async for event in events:
            if isinstance(event, (TextDelta, ReasoningDelta, Relayed)):
                if not sent_start:
                    sent_start = True
                    yield started
                yield event
            elif isinstance(event, Finished):
                finish_reason = event.reason
            elif isinstance(event, UsageReported):
                usage = event.usage
            elif isinstance(event, Failed):
                yield StreamFailed(event.error)
                return
    if not sent_start:
        yield started
    yield StreamEnded(
        finish_reason or recorder.finish_reason or _DEFAULT_FINISH_REASON,
        usage or recorder.usage,
        recorder.metrics(),
    )
