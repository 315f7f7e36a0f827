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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from service.chunking import WordRechunker
from service.deadline import Deadline
from service.events import Failed, ResponseBatch, StreamFailed, UpstreamBatch
from service.metrics import StreamRecorder
from service.relay import Relay


class ChatStream:
    """The response batches of one stream (module docstring)."""

    __slots__ = (
        "_deadline",
        "_first",
        "_loop",
        "_over",
        "_reader",
        "_rechunker",
        "_recorder",
        "_relay",
        "_upstream",
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
            rechunker = self._rechunker
            if rechunker is not None:
                out = rechunker.cut(out)
            if out:
                return out
        raise StopAsyncIteration

    def _end(self) -> ResponseBatch:
        self._over = True
        self._deadline.stop()
        return self._relay.ended()

    async def aclose(self) -> None:
        self._over = True
        self._deadline.stop()
        await self._upstream.aclose()
