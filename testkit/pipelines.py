"""A stream's pipeline (`service.pipeline.ChatStream`) around any source of upstream batches,
for tests that drive its time bounds or the stages in process, and an upstream stream whose
reads a test makes, pulled or pushed (`SocketUpstream`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

from service.chunking import WordRechunker
from service.deadline import Deadline
from service.events import ResponseBatch, ResponseEvent, UpstreamBatch
from service.metrics import StreamRecorder
from service.pipeline import ChatStream
from service.push import UpstreamSink


def bounded(
    batches: AsyncGenerator[UpstreamBatch, None],
    *,
    max_seconds: float,
    idle_seconds: float,
    first_event_seconds: float | None = None,
    rechunker: WordRechunker | None = None,
) -> ChatStream:
    """`batches` as the service streams them, within these bounds."""
    recorder = StreamRecorder(stream_id="s", model="m", provider="p", received_at=0.0)
    deadline = Deadline(max_seconds, idle_seconds, first_event_seconds)
    return ChatStream(batches, recorder, deadline, rechunker=rechunker)


async def events_of(stream: ChatStream) -> list[ResponseEvent]:
    """Every response event of `stream`, read to its end."""
    events: list[ResponseEvent] = []
    async for batch in stream:
        events += batch
    return events


def flat(batches: list[ResponseBatch]) -> list[ResponseEvent]:
    return [event for batch in batches for event in batch]


class Grace:
    """A shutdown's `CutOff` (`service.http.stream_response`) whose grace the test ends."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def on_grace_expired(self, callback: Callable[[], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def expire(self) -> None:
        for callback in list(self.callbacks):
            callback()


class SocketUpstream(AsyncGenerator[UpstreamBatch, None]):
    """An upstream's stream whose reads the test makes (`arrive`, `finish`), as a connection's
    socket callbacks would (`service.push.PushSource`): pulled, `__anext__` waits for them;
    pushed, each goes to the sink at once, inside the `arrive` call. Records what the stream
    did to it: paused, closed."""

    def __init__(self) -> None:
        self._arrived: deque[UpstreamBatch | None] = deque()  # None: the end
        self._waiter: asyncio.Future[None] | None = None
        self.sink: UpstreamSink | None = None
        self.paused = False
        self.closed = False
        self.pushed = asyncio.Event()  # set once a sink took over
        self.closing = asyncio.Event()

    def arrive(self, batch: UpstreamBatch) -> None:
        self._deliver(batch)

    def finish(self) -> None:
        self._deliver(None)

    def _deliver(self, batch: UpstreamBatch | None) -> None:
        if self.closed:
            return
        sink = self.sink
        if sink is None:
            self._arrived.append(batch)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)
        elif batch is None:
            self.sink = None
            sink.end()
        else:
            sink.batch(batch)

    async def __anext__(self) -> UpstreamBatch:
        while not self._arrived:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        batch = self._arrived.popleft()
        if batch is None:
            raise StopAsyncIteration
        return batch

    def push(self, sink: UpstreamSink) -> bool:
        self.sink = sink
        self.pushed.set()
        while self._arrived and self.sink is sink:
            self._deliver(self._arrived.popleft())
        return True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def asend(self, value: None) -> UpstreamBatch:
        return await self.__anext__()

    async def athrow(self, *arguments: Any) -> UpstreamBatch:
        raise arguments[-1]

    async def aclose(self) -> None:
        self.closed = True
        self.sink = None
        self.closing.set()
