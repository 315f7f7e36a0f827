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
read. The timer never fires across a batch handed on: it interrupts the read, never the consumer,
which reads from one task. The stream's pipeline (`service.pipeline`) tells it when a read
starts and ends, in the same frame as the read itself: as a generator layer of its own it cost
a frame more on every per-token suspension (issue #16). While the stream is pushed from the
upstream's socket (`service.push`) no task reads it: a bound that passes is told to
`on_expired` instead, and a read is always in progress, except while the client's full buffer
has the upstream paused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.errors import ServiceError, StreamDeadlineExceeded, UpstreamTimeout


class Deadline:
    """The timer and what it needs to know: the bounds, and the read in progress, if any.

    `begin` at the first read (the bounds run from there), `read_started_at` and `reader` set
    while a read is in progress, `first_batch` once the first batch came, `stop` at the end.
    When a bound passes, `expired` holds the error and, if a read was in progress in `reader`,
    that task is cancelled with `interrupted` set: the caller takes the cancellation back
    (`uncancel`) and ends the stream with `Failed(expired)`; with no reader, `on_expired` is
    called with it (a pushed stream)."""

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
        "on_expired",
        "read_started_at",
        "reader",
    )

    def __init__(
        self, max_seconds: float, idle_seconds: float, first_seconds: float | None
    ) -> None:
        self._max_seconds = max_seconds
        self._idle_seconds = idle_seconds
        self._first_seconds = first_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadline = 0.0
        # When the first event is due (None once it came, or without that bound).
        self._first_due: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.expired: ServiceError | None = None
        self.interrupted = False
        # Set while a read that the idle bound applies to is in progress.
        self.read_started_at: float | None = None
        # The task the reads happen in (one for the whole stream), while one is in progress.
        self.reader: asyncio.Task[object] | None = None
        # Told of a bound passed while no task reads (a pushed stream).
        self.on_expired: Callable[[ServiceError], None] | None = None

    def begin(self, loop: asyncio.AbstractEventLoop) -> None:
        """The first read starts now: the bounds run from here."""
        self._loop = loop
        now = loop.time()
        self._deadline = now + self._max_seconds
        first = self._first_seconds
        self._first_due = None if first is None else now + first
        due = self._deadline if self._first_due is None else min(self._deadline, self._first_due)
        self._timer = loop.call_at(due, self._check)

    def first_batch(self) -> None:
        """The first batch came: from now on the idle bound applies, not the first-event one."""
        loop = self._loop
        assert loop is not None
        self._first_due = None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(
            min(self._deadline, loop.time() + self._idle_seconds), self._check
        )

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _check(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
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
            self._timer = loop.call_at(min(self._deadline, due), self._check)

    def _expire(self, error: ServiceError) -> None:
        self.expired = error
        if self.reader is not None:
            self.interrupted = True
            self.reader.cancel()
        elif self.on_expired is not None:
            self.on_expired(error)
