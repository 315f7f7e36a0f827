"""The time bounds of an upstream stream, watched by one timer.

- `first_event_seconds` (`FIRST_TOKEN_TIMEOUT_SECONDS`), when given: the wait for the first
  event, retries included. The SDK's read timeout bounds the wait for each response head (and
  each retry follows one); this bounds the whole wait for the first token, and is the only
  bound on a stream's silences between its head and its first token (the transport times no
  stream read: `service.upstream.transport`). Past it: `Failed(UpstreamTimeout)`, a 504
  before headers.

Two more bound an upstream that keeps a stream busy without ever ending it (issue #11):

- `max_seconds` (`MAX_STREAM_SECONDS`): the whole stream, from its first read. Past it the
  stream ends with `Failed(StreamDeadlineExceeded)`: a 504 before headers; after them an in-band
  `stream_deadline` error and the format's end marker.
- `idle_seconds` (`UPSTREAM_READ_TIMEOUT_SECONDS`), after the first event: the longest read that
  produces no event. The SDK's read timeout only sees bytes, so SSE comments, chunks with empty
  `choices` or a trickle of one byte a second kept it from firing forever; here all of them are
  silence. Past it: `Failed(UpstreamTimeout)`. Before the first event the first-event bound
  rules instead.

One timer per stream, moved lazily, instead of an `asyncio.timeout` around each read: that costs
~7 µs per event, a third of the service's per-token budget (`bench/relay_overhead.py`); the
first-event bound was its own generator layer with an `asyncio.timeout` until issue #12 measured
the layer's cost per token. The timer
fires when a bound could first be passed; if it has not been (a read started since), it re-arms.
A read in progress when a bound passes is interrupted by cancelling the task doing it, as
`asyncio.timeout` does, and the cancellation is taken back (`Task.uncancel`) once turned into
the `Failed` event; a bound passed while the consumer is busy sending is noticed before the next
read. The timer never fires across a `yield`: it interrupts the read, never the consumer, which
iterates from one task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.errors import ServiceError, StreamDeadlineExceeded, UpstreamTimeout
from service.events import Failed, UpstreamBatch


class _Watch:
    """The timer and what it needs to know: the bounds, and the read in progress, if any."""

    __slots__ = (
        "_deadline",
        "_first_due",
        "_first_seconds",
        "_idle_seconds",
        "_loop",
        "_max_seconds",
        "_timer",
        "expired",
        "interrupted",
        "read_started_at",
        "reader",
    )

    def __init__(
        self, max_seconds: float, idle_seconds: float, first_seconds: float | None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._max_seconds = max_seconds
        self._idle_seconds = idle_seconds
        now = self._loop.time()
        self._deadline = now + max_seconds
        self._first_seconds = first_seconds
        # When the first event is due (None once it came, or without that bound).
        self._first_due = None if first_seconds is None else now + first_seconds
        self.expired: ServiceError | None = None
        self.interrupted = False
        # Set while a read that the idle bound applies to is in progress.
        self.read_started_at: float | None = None
        self.reader: asyncio.Task[object] | None = None
        first_due = self._first_due
        due = self._deadline if first_due is None else min(self._deadline, first_due)
        self._timer = self._loop.call_at(due, self._check)

    def watch_idle(self) -> None:
        """The first event came: from now on the idle bound applies, not the first-event one."""
        self._first_due = None
        self._timer.cancel()
        self._timer = self._loop.call_at(
            min(self._deadline, self._loop.time() + self._idle_seconds), self._check
        )

    def stop(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        started = self.read_started_at
        if now >= self._deadline:
            self._expire(
                StreamDeadlineExceeded(
                    f"the stream reached the service's limit of {self._max_seconds:g} s"
                )
            )
        elif self._first_due is not None and now >= self._first_due:
            self._expire(
                UpstreamTimeout(f"the upstream sent no token within {self._first_seconds:g} s")
            )
        elif started is not None and now >= started + self._idle_seconds:
            self._expire(
                UpstreamTimeout(f"the upstream sent no content for {self._idle_seconds:g} s")
            )
        else:
            due = self._first_due
            if due is None:
                due = (started if started is not None else now) + self._idle_seconds
            self._timer = self._loop.call_at(min(self._deadline, due), self._check)

    def _expire(self, error: ServiceError) -> None:
        self.expired = error
        if self.reader is not None:
            self.interrupted = True
            self.reader.cancel()


async def within_deadline(
    batches: AsyncGenerator[UpstreamBatch, None],
    *,
    max_seconds: float,
    idle_seconds: float,
    first_event_seconds: float | None = None,
) -> AsyncGenerator[UpstreamBatch, None]:
    """`batches`, ended with a `Failed` event when a bound passes (see the module docstring)."""
    loop = asyncio.get_running_loop()
    watch = _Watch(max_seconds, idle_seconds, first_event_seconds)
    first = True
    # Its consumer iterates it from one task (the stream's, or a resumable stream's producer):
    # the task a read may be interrupted in is known once, not looked up per read (#16).
    reader = asyncio.current_task(loop)
    async with aclosing(batches):
        try:
            while watch.expired is None:
                watch.reader = reader
                if not first:
                    watch.read_started_at = loop.time()
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watch.interrupted and reader is not None and reader.uncancel() == 0:
                        break  # only the watch cancelled the read: end with its error
                    raise
                finally:
                    watch.reader = watch.read_started_at = None
                if first:
                    first = False
                    watch.watch_idle()
                yield batch
                if isinstance(batch[-1], Failed):
                    return
        finally:
            watch.stop()
    assert watch.expired is not None
    yield [Failed(watch.expired)]
