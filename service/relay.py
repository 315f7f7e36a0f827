"""Turns what the model did (upstream events) into what the client is told (response events).

`StreamStarted` is held back until the upstream has produced its first text (or reasoning) or
finish, so that the first response event tells whether the upstream accepted the request: a
`StreamFailed` first means nothing was said yet, and the response can still be a real HTTP
error (`service.http`).
`StreamEnded` combines the finish reason, the usage chunk (which comes after the finish) and the
recorder's metrics, so it is sent once the upstream stream is over.

A `Relayed` upstream event (the OpenAI-compatible routes) passes through like text; its finish
reason and usage were recorded by the recorder, which the `StreamEnded` then reports. Every
upstream event is shown to the recorder (`StreamRecorder.record`) before it is relayed.

Batches stay batches: what one upstream read completed is one response batch, so one write.
A `Relay` is called by the stream's pipeline (`service.pipeline`) for each batch, in the frame
that read it: no generator layer of its own, which cost a frame on every per-token suspension
(issue #16).

With several deployments (`UPSTREAMS`), a routed stream's first batch opens with a `Routed`
event naming the deployment that answers: the `StreamStarted` then names it too.
"""

from __future__ import annotations

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


class Relay:
    """Tells the client what one stream's upstream did, batch by batch (module docstring)."""

    __slots__ = ("_finish_reason", "_record", "_recorder", "_sent_start", "_started", "_usage")

    def __init__(self, recorder: StreamRecorder) -> None:
        self._recorder = recorder
        self._record = recorder.record
        self._started = StreamStarted(recorder.stream_id, recorder.model)
        self._sent_start = False
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    def told(self, batch: UpstreamBatch) -> ResponseBatch:
        """The response events for one upstream batch, recorded first; possibly none. A
        `StreamFailed` (from a `Failed`, always last) ends the stream: tell nothing after it."""
        self._record(batch)
        out: ResponseBatch = []
        for event in batch:
            if isinstance(event, (TextDelta, ReasoningDelta, Relayed)):
                if not self._sent_start:
                    self._sent_start = True
                    out.append(self._started)
                out.append(event)
            elif isinstance(event, Finished):
                self._finish_reason = event.reason
            elif isinstance(event, UsageReported):
                self._usage = event.usage
            elif isinstance(event, Failed):
                out.append(StreamFailed(event.error))
                return out
            elif type(event) is Routed:  # once, first, with UPSTREAMS only
                recorder = self._recorder
                self._started = StreamStarted(recorder.stream_id, recorder.model, event.deployment)
        return out

    def ended(self) -> ResponseBatch:
        """The last batch once the upstream's stream is over: the `StreamEnded` (after the
        `StreamStarted` if nothing was said)."""
        recorder = self._recorder
        ended = StreamEnded(
            self._finish_reason or recorder.finish_reason or _DEFAULT_FINISH_REASON,
            self._usage or recorder.usage,
            recorder.metrics(),
        )
        return [ended] if self._sent_start else [self._started, ended]
