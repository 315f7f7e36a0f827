"""Where a resumed stream's events come from: the producer's memory, when it runs on this
replica, or the store. Both give the events known so far, a way to wait for more, and a live
follower from any event on; `bring_to` brings a fresh encoder to the client's position.

A client's position is counted on the wire, as it sees it: `Last-Event-ID: <stream id>:<n>` is
the `n`-th SSE event it received (from 0), an NDJSON client's `n` its `n`-th line. A format
writes at most one such event per response event, and none for some (reasoning deltas in SSE),
so the position is found by encoding the stream's events from the start and counting what the
encoder wrote; the encoder is then in the state the original one was in at that point, whatever
state it keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from service.errors import InvalidRequest, StreamEventsExpired
from service.events import ResponseBatch, ResponseEvent, TextDelta
from service.resume.codec import is_terminal
from service.resume.producer import Producer, follow
from service.resume.store import StoredBatch
from service.wire.base import Encoder

# Stands in for each trimmed event when an encoder is brought to a position after them. The
# formats here keep counts, not text; a trimmed reasoning delta (which SSE skips) would shift
# SSE ids by one, a risk only for streams longer than RESUME_MAX_EVENTS.
TRIMMED = TextDelta("")


@dataclass
class Source:
    stream_id: str
    format_name: str
    # Known events, numbered from `first` (the ones before were trimmed from the store).
    events: list[ResponseEvent]
    first: int
    # Waits (a tick at most) for more events; whether some came.
    more: Callable[[], Awaitable[bool]]
    # The events from number `n` on, live, until the terminal event, in batches.
    follow: Callable[[int], AsyncGenerator[ResponseBatch, None]]
    producer: Producer | None = field(default=None)
    # How long a live stream's known events may stay behind a client's position, in seconds
    # without a new event (each restarts it; the last read can run a tick past it): a client
    # of the producer gets each event before the writer stores it, so the store can lag; the
    # producer's memory never does (0: `more` is asked once).
    lag: float = 0.0
    # Whether the producer is still at work on the stream (its lease held), so that more can
    # come; also tells it a client waits here. Asked after each `more` that found nothing.
    producing: Callable[[], Awaitable[bool]] | None = None

    @property
    def known(self) -> int:
        """The number of the first event not known yet."""
        return self.first + len(self.events)

    @property
    def finished(self) -> bool:
        return bool(self.events) and is_terminal(self.events[-1])


def local_source(producer: Producer, tick: float) -> Source:
    async def more() -> bool:
        if producer.finished:
            return False
        count = len(producer.events)
        try:
            async with asyncio.timeout(tick):
                await producer.changed()
        except TimeoutError:
            pass
        return len(producer.events) > count

    return Source(
        producer.stream_id,
        producer.format_name,
        producer.events,  # the producer's own list: it grows as the stream goes on
        0,
        more,
        lambda number: follow(producer, number - 1),
        producer,
    )


# Whether the client has gone away (Starlette's `Request.is_disconnected`).
ClientGone = Callable[[], Awaitable[bool]]


async def still_here() -> bool:
    return False


async def bring_to(
    encoder: Encoder, source: Source, after: int, gone: ClientGone = still_here
) -> int | None:
    """Encode, and drop, what the client has: the events up to its `after + 1`-th written one
    (-1: none). Returns the number of the next event to send; None when the stream is over and
    the client has all of it. `InvalidRequest` for a position the stream never reached (or not
    by the time the client is `gone`), `StreamEventsExpired` when the events to send are no
    longer stored; what `gone` raises (the hub's `ServerShuttingDown`) goes through."""
    number = written = 0
    while written <= after:
        if number >= source.known:
            if source.finished or not await _more(source, gone):
                raise InvalidRequest(
                    f"Last-Event-ID: stream {source.stream_id} has no event {after} "
                    f"(it has {written} so far)"
                )
            continue
        event = TRIMMED if number < source.first else source.events[number - source.first]
        if encoder.encode(event):
            written += 1
        number += 1
    if number < source.first:
        raise StreamEventsExpired(
            f"events of stream {source.stream_id} before number {source.first} are no longer "
            "stored (RESUME_MAX_EVENTS)"
        )
    if source.finished and number >= source.known:
        return None
    return number


async def _more(source: Source, gone: ClientGone) -> bool:
    """Whether more events came before `source.lag` seconds passed without any (a tick at
    least), the producer stopped or the client left; `gone` is asked, and may raise, after
    each read that found nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + source.lag
    while not await source.more():
        if loop.time() >= deadline or await gone():
            return False
        if source.producing is not None and not await source.producing():
            # Its final events are stored before its lease goes: one last look.
            return await source.more()
    return True


def numbered(batch: StoredBatch) -> list[tuple[int, ResponseEvent]]:
    return list(enumerate(batch.events, start=batch.first))
