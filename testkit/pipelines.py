"""A stream's pipeline (`service.pipeline.ChatStream`) around any source of upstream batches,
for tests that drive its time bounds or the stages in process."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from service.deadline import Deadline
from service.events import ResponseBatch, ResponseEvent, UpstreamBatch
from service.metrics import StreamRecorder
from service.pipeline import ChatStream


def bounded(
    batches: AsyncGenerator[UpstreamBatch, None],
    *,
    max_seconds: float,
    idle_seconds: float,
    first_event_seconds: float | None = None,
) -> ChatStream:
    """`batches` as the service streams them, within these bounds."""
    recorder = StreamRecorder(stream_id="s", model="m", provider="p", received_at=0.0)
    deadline = Deadline(max_seconds, idle_seconds, first_event_seconds)
    return ChatStream(batches, recorder, deadline)


async def events_of(stream: ChatStream) -> list[ResponseEvent]:
    """Every response event of `stream`, read to its end."""
    events: list[ResponseEvent] = []
    async for batch in stream:
        events += batch
    return events


def flat(batches: list[ResponseBatch]) -> list[ResponseEvent]:
    return [event for batch in batches for event in batch]
