"""Turns what the model did (upstream events) into what the client is told (response events).

`StreamStarted` is held back until the upstream has produced its first text (or reasoning) or
finish, so that
the first response event tells whether the upstream accepted the request: a `StreamFailed` first
means nothing was said yet, and the response can still be a real HTTP error (`service.http`).
`StreamEnded` combines the finish reason, the usage chunk (which comes after the finish) and the
recorder's metrics, so it is sent once the upstream stream is over.

A `Relayed` upstream event (the OpenAI-compatible routes) passes through like text; its finish
reason and usage were recorded by the recorder, which the `StreamEnded` then reports. Every
upstream event is shown to the recorder (`StreamRecorder.record`) before it is relayed.

Batches stay batches: what one upstream read completed is one response batch, so one write.

With several deployments (`UPSTREAMS`), a routed stream's first batch opens with a `Routed`
event naming the deployment that answers: the `StreamStarted` then names it too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.events import (
    Failed,
    Finished,
    ReasoningDelta,
    Relayed,
    ResponseBatch,
    Routed,
    StreamEnded,
    StreamFailed,
    StreamStarted,
    TextDelta,
    UpstreamBatch,
    Usage,
    UsageReported,
)
from service.metrics import StreamRecorder

# A stream that ends with `[DONE]` but no finish reason (some compatible servers) ended normally.
_DEFAULT_FINISH_REASON = "stop"


async def relay(
    batches: AsyncGenerator[UpstreamBatch, None], recorder: StreamRecorder
) -> AsyncGenerator[ResponseBatch, None]:
    """The response events, a batch per upstream batch that says something to the client, and
    a last one with the `StreamEnded` (or the `StreamFailed`, which ends a batch too)."""
    started = StreamStarted(recorder.stream_id, recorder.model)
    sent_start = False
    finish_reason: str | None = None
    usage: Usage | None = None
    record = recorder.record
    recorder.upstream_started_at = time.perf_counter()
    async with aclosing(batches):
        async for batch in batches:
            record(batch)
            out: ResponseBatch = []
            for event in batch:
                if isinstance(event, (TextDelta, ReasoningDelta, Relayed)):
                    if not sent_start:
                        sent_start = True
                        out.append(started)
                    out.append(event)
                elif isinstance(event, Finished):
                    finish_reason = event.reason
                elif isinstance(event, UsageReported):
                    usage = event.usage
                elif isinstance(event, Failed):
                    out.append(StreamFailed(event.error))
                    yield out
                    return
                elif type(event) is Routed:  # once, first, with UPSTREAMS only
                    started = StreamStarted(recorder.stream_id, recorder.model, event.deployment)
            if out:
                yield out
    ended = StreamEnded(
        finish_reason or recorder.finish_reason or _DEFAULT_FINISH_REASON,
        usage or recorder.usage,
        recorder.metrics(),
    )
    yield [ended] if sent_start else [started, ended]
