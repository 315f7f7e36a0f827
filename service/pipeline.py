"""One stream's way from the upstream to the client, one frame per read (issue #16).

    upstream batches ─▶ within the time bounds (service.deadline)
                     ─▶ told to the client, recorded for the metrics (service.relay)
                     ─▶ re-cut on words, on request (service.chunking) ─▶ response batches

`ChatStream` iterates response batches: each `__anext__` awaits the upstream's next batch (the
only await under it) and hands it through the stages above, which are plain method calls. As
async generator layers of their own, each stage cost a frame more on every suspension for a
read, and a stream suspends once per token: ~6% of the CPU per token at 100 streams (issue #16,
bench/RESULTS.md).

It is read from one task (the stream's response, or a resumable stream's producer), which the
deadline may interrupt in a read (`service.deadline`). `aclose` closes the upstream request;
after a terminal event (`StreamEnded`, `StreamFailed`, always last) it ends by itself.

Or, once its first batch is out, its response can have the rest pushed (`push`, `service.push`):
the same stages, called from the upstream's socket callback with each batch, hand their output
to the response's sink; the deadline then ends the stream through its `on_expired`, and a full
client buffer pauses the upstream (and the idle bound, as a slow consumer does when pulling).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from service.chunking import WordRechunker
from service.deadline import Deadline
from service.errors import ServiceError
from service.events import Failed, ResponseBatch, StreamFailed, UpstreamBatch
from service.metrics import StreamRecorder
from service.push import PushSource, ResponseSink, UpstreamSink, pushable
from service.relay import Relay


class ChatStream:
    """The response batches of one stream (module docstring)."""

    __slots__ = (
        "_deadline",
        "_first",
        "_loop",
        "_over",
        "_paused",
        "_pushed_upstream",
        "_reader",
        "_rechunker",
        "_recorder",
        "_relay",
        "_upstream",
        "_writer",
    )

    def __init__(
        self,
        upstream: AsyncGenerator[UpstreamBatch, None],
        recorder: StreamRecorder,
        deadline: Deadline,
        *,
        rechunker: WordRechunker | None = None,
    ) -> None:
        self._upstream = upstream
        self._recorder = recorder
        self._relay = Relay(recorder)
        self._deadline = deadline
        self._rechunker = rechunker
        self._first = True
        self._over = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[object] | None = None
        # The response's sink while the stream is pushed, and the upstream pushing it.
        self._writer: ResponseSink | None = None
        self._pushed_upstream: PushSource[UpstreamSink] | None = None
        # The client's full buffer has the upstream paused: no silence is counted meanwhile.
        self._paused = False

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> ResponseBatch:
        deadline = self._deadline
        while not self._over:
            loop = self._loop
            if loop is None:  # the first read: the stream's bounds and times start here
                loop = self._loop = asyncio.get_running_loop()
                self._reader = asyncio.current_task(loop)
                deadline.begin(loop)
                self._recorder.upstream_started_at = time.perf_counter()
            batch: UpstreamBatch | None = None
            expired = deadline.expired
            if expired is not None:  # a bound passed while the consumer was busy
                batch = [Failed(expired)]
            else:
                # The read, in this frame: a helper coroutine would be a frame more per read.
                reader = self._reader
                deadline.reader = reader
                if not self._first:
                    deadline.read_started_at = loop.time()
                try:
                    batch = await anext(self._upstream)
                except StopAsyncIteration:
                    pass
                except asyncio.CancelledError:
                    expired = deadline.expired
                    if not deadline.interrupted or reader is None or reader.uncancel() > 0:
                        raise
                    assert expired is not None
                    batch = [Failed(expired)]  # only the deadline cancelled the read
                finally:
                    deadline.reader = deadline.read_started_at = None
                if self._first and batch is not None:
                    self._first = False
                    deadline.first_batch()
            if batch is None:
                out = self._end()
            else:
                out = self._relay.told(batch)
                if out and type(out[-1]) is StreamFailed:
                    self._over = True
                    deadline.stop()
            out = self._cut(out)
            if out:
                return out
        raise StopAsyncIteration

    def _end(self) -> ResponseBatch:
        self._over = True
        self._deadline.stop()
        return self._relay.ended()

    async def aclose(self) -> None:
        self._over = True
        self._writer = None
        self._deadline.stop()
        await self._upstream.aclose()

    # -- pushed (`service.push`) -------------------------------------------------------------

    def push(self, writer: ResponseSink) -> bool:
        """Hand the rest of the stream to `writer` from the upstream's socket callbacks; False
        (nothing changed) when the upstream cannot push, or before the first read: pull then."""
        upstream = self._pushed_upstream = pushable(self._upstream)
        loop = self._loop
        if self._over or loop is None or upstream is None or self._deadline.expired is not None:
            return False  # (a bound passed while the first batch went out: reading ends it)
        deadline = self._deadline
        self._writer = writer
        deadline.on_expired = self._expired
        deadline.read_started_at = loop.time()
        if upstream.push(self):
            return True
        self._writer = deadline.on_expired = deadline.read_started_at = None
        return False

    def batch(self, batch: UpstreamBatch) -> None:
        """An upstream batch, from the socket callback that read it (`UpstreamSink`)."""
        writer = self._writer
        if writer is None:
            return
        try:
            loop = self._loop
            assert loop is not None
            if not self._paused:  # what one read brought, batch after batch, while paused
                self._deadline.read_started_at = loop.time()  # the next read starts
            out = self._relay.told(batch)
            if out and type(out[-1]) is StreamFailed:
                self._stop_pushing()
            self._hand(writer, out)
        except Exception as error:
            self._stop_pushing()
            writer.failed(error)

    def end(self) -> None:
        """The upstream's answer is over (`UpstreamSink`)."""
        writer = self._writer
        if writer is None:
            return
        self._writer = None  # (`_end` ends the rest)
        try:
            self._hand(writer, self._end())
        except Exception as error:
            writer.failed(error)

    def _expired(self, error: ServiceError) -> None:
        """A time bound passed while pushed: the stream ends with its error, the upstream read no
        further (closing the stream closes it)."""
        writer = self._writer
        if writer is None:
            return
        self._stop_pushing()
        self.pause()
        try:
            self._hand(writer, self._relay.told([Failed(error)]))
        except Exception as failure:
            writer.failed(failure)

    def _cut(self, out: ResponseBatch) -> ResponseBatch:
        """`out` re-cut on words, when asked for (possibly empty: text held back)."""
        rechunker = self._rechunker
        return out if rechunker is None else rechunker.cut(out)

    def _hand(self, writer: ResponseSink, out: ResponseBatch) -> None:
        out = self._cut(out)
        if out:
            writer.batch(out)

    def _stop_pushing(self) -> None:
        self._writer = None
        self._over = True
        self._deadline.stop()

    def pause(self) -> None:
        """The client's buffer is full: read nothing more, and count no silence, until
        `resume`."""
        self._paused = True
        self._deadline.read_started_at = None
        if self._pushed_upstream is not None:
            self._pushed_upstream.pause()

    def resume(self) -> None:
        loop = self._loop
        self._paused = False
        if self._writer is None or loop is None:
            return
        self._deadline.read_started_at = loop.time()
        if self._pushed_upstream is not None:
            self._pushed_upstream.resume()
