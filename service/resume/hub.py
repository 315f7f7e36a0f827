"""Resumable streams on one replica: its producers, the writer, the ticker and the stop listener.

Built only when REDIS_URL is set (`service.app`), and the only way the rest of the service
reaches `service.resume`. Per replica, three tasks share one Redis client (and a fourth cuts
the producers when the shutdown grace runs out):

- the *writer* stores what producers appended, every stream's batch in one round trip, at most
  every `FLUSH_INTERVAL_SECONDS` (a live stream costs one entry per flush, not one command per
  token; a burst is stored in a few entries). Clients never wait for it: the producer keeps the
  events in memory and the client here is served from there;
- the *ticker* renews the leases of this replica's producers, cancels a producer whose clients
  all left over RESUME_GRACE_SECONDS ago when no reader elsewhere has marked itself since, and
  reads stop requests a producer may have missed;
- the *stop listener* cancels a local producer the moment any replica publishes its id.

Redis failing never fails a stream: a stream that cannot be stored at start is served without
resume (the direct path, as without REDIS_URL); one whose writes fail later goes on for the
clients still connected here, and is cancelled if none is (nobody could resume it). Each such
event is logged and counted in `unavailable_total`. After a failure, new streams skip Redis for
`RETRY_AFTER_FAILURE_SECONDS`, so an unreachable Redis costs one connect timeout, not one per
stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from starlette.responses import Response

from service.chat import OpenedStream
from service.errors import (
    ResumeUnavailable,
    StreamEventsExpired,
    StreamLost,
    StreamNotFound,
    server_shutting_down,
)
from service.events import ResponseBatch, ResponseEvent, StreamFailed
from service.http.stream_response import STREAM_ID_HEADER, ChatStreamResponse, StreamTiming
from service.limits import StreamSlot
from service.outcomes import Delivery
from service.resume.codec import is_terminal
from service.resume.producer import Producer, follow
from service.resume.sources import (
    ClientGone,
    Source,
    bring_to,
    local_source,
    numbered,
    still_here,
)
from service.resume.store import Append, StoreUnavailable, StreamStore
from service.settings import Settings
from service.shutdown import ShutdownCoordinator
from service.wire.formats import FORMATS

logger = logging.getLogger("service.resume")

T = TypeVar("T")
_UNAVAILABLE = "resuming streams is unavailable right now (the stream store cannot be reached)"
FLUSH_INTERVAL_SECONDS = 0.05
RETRY_AFTER_FAILURE_SECONDS = 5.0
# How long a stop request waits for the stream's end to be stored before answering 202.
STOP_CONFIRM_SECONDS = 5.0


class ResumableStreams:
    def __init__(self, settings: Settings, shutdown: ShutdownCoordinator) -> None:
        self.replica = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._settings = settings
        self._grace = settings.resume_grace_seconds
        # Leases are renewed three times per lease period; grace and readers checked as often.
        self._tick = min(1.0, settings.resume_lease_seconds / 3, settings.resume_grace_seconds / 4)
        self._store = StreamStore(settings, block_seconds=self._tick)
        self._shutdown = shutdown
        self._producers: dict[str, Producer] = {}
        self._dirty: dict[str, Producer] = {}
        self._finished: dict[str, Producer] = {}
        self._wake_writer = asyncio.Event()
        self._skip_until = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.unavailable_total = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_loop(), name="resume writer")
        for name, job in (
            ("ticker", self._tick_loop),
            ("stop listener", self._listen_for_stops),
            ("shutdown watch", self._cut_at_shutdown),
        ):
            self._tasks.append(loop.create_task(job(), name=f"resume {name}"))

    async def aclose(self) -> None:
        """At the app's end: while draining, producers get the rest of the shutdown grace;
        then the rest are cut, what they produced is stored, and the client closed."""
        producers = list(self._producers.values())
        if producers and self._shutdown.draining:
            grace = asyncio.ensure_future(self._shutdown.grace_expired.wait())
            done = asyncio.ensure_future(asyncio.gather(*(p.wait() for p in producers)))
            await asyncio.wait((grace, done), return_when=asyncio.FIRST_COMPLETED)
            grace.cancel()
            done.cancel()
        for producer in list(self._producers.values()):
            producer.cancel("shutdown")
        for producer in producers:
            await producer.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._closing = True
            self._wake_writer.set()
            await asyncio.wait((self._writer,), timeout=2 * self._tick)
            self._writer.cancel()
        await self._store.aclose()

    async def _cut_at_shutdown(self) -> None:
        await self._shutdown.grace_expired.wait()
        for producer in list(self._producers.values()):
            producer.cancel("shutdown")

    def _unavailable(self, what: str, error: Exception) -> None:
        self.unavailable_total += 1
        self._skip_until = asyncio.get_running_loop().time() + RETRY_AFTER_FAILURE_SECONDS
        logger.warning("resume unavailable: %s (%s)", what, error)

    # -- producing ---------------------------------------------------------------------------

    async def produce(
        self,
        opened: OpenedStream,
        format_name: str,
        slot: StreamSlot,
        caller: str | None,
        *,
        chat_id: str | None = None,
    ) -> AsyncGenerator[ResponseBatch, None] | None:
        """Make `opened` resumable: its producer starts, and the original client's events are
        returned. None when the store cannot be reached (the caller streams directly);
        `StreamExists` when the id is taken. `chat_id` (useChat's) makes it that chat's
        active stream."""
        if asyncio.get_running_loop().time() < self._skip_until:
            return None
        meta = {"format": format_name, "key": caller, "replica": self.replica}
        try:
            await self._store.create(opened.stream_id, meta, self.replica, chat_id=chat_id)
        except StoreUnavailable as error:
            self._unavailable(f"stream {opened.stream_id} starts without resume", error)
            return None

        def ended(producer: Producer, delivery: Delivery) -> None:
            slot.release()
            producer.recorder.finish(delivery)
            self._finished[producer.stream_id] = producer
            self._mark_dirty(producer)

        producer = Producer(
            opened.stream_id,
            opened.events,
            opened.recorder,
            format_name=format_name,
            caller=caller,
            on_append=self._mark_dirty,
            on_end=ended,
        )
        producer.chat_key = None if chat_id is None else self._store.chat_key(chat_id, caller)
        self._producers[producer.stream_id] = producer
        producer.start()
        return follow(producer, -1, original=True)

    def _mark_dirty(self, producer: Producer) -> None:
        self._dirty[producer.stream_id] = producer
        if not self._wake_writer.is_set():
            self._wake_writer.set()

    async def _write_loop(self) -> None:
        """Until closed, and then until everything appended is stored."""
        while not (self._closing and not self._dirty):
            await self._wake_writer.wait()
            if not self._closing:
                # Lingering lets one round trip carry every stream's appends since the last.
                await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self._wake_writer.clear()
            dirty, self._dirty = self._dirty, {}
            appends = []
            for producer in dirty.values():
                finished = producer.stream_id in self._finished
                if producer.stored and producer.unsent:
                    # `unsent` is always the tail of `events`.
                    packed, producer.unsent = producer.unsent, []
                    last = len(producer.events) - 1
                    appends.append(Append(producer.stream_id, last, packed, finished))
                elif finished:
                    self._forget(producer)
            if appends:
                await self._store_appends(appends, dirty)

    async def _store_appends(self, appends: list[Append], dirty: dict[str, Producer]) -> None:
        try:
            stored = await self._store.append(appends)
        except StoreUnavailable as error:
            stored = [False] * len(appends)
            failure: Exception = error
        else:
            failure = RuntimeError("the store refused the entry")
        for append, ok in zip(appends, stored, strict=True):
            producer = dirty[append.stream_id]
            if not ok:
                producer.stored = False
                producer.unsent = []
                self._unavailable(f"stream {producer.stream_id} is no longer resumable", failure)
                if producer.attached == 0:
                    producer.cancel("abandoned")  # nobody is here, and nobody can resume it
            if append.finished:
                self._forget(producer)

    def _forget(self, producer: Producer) -> None:
        self._producers.pop(producer.stream_id, None)
        self._finished.pop(producer.stream_id, None)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            live = [p for p in self._producers.values() if not p.finished and p.stored]
            if not live:
                continue
            now = loop.time()
            due = [p for p in live if p.abandon_due(now, self._grace)]
            try:
                stops, present = await self._store.tick(
                    [(p.stream_id, p.chat_key) for p in live],
                    [p.stream_id for p in due],
                    self.replica,
                )
            except StoreUnavailable as error:
                self._unavailable("cannot renew the producers' leases", error)
                for producer in live:
                    producer.stored = False
                    if producer.attached == 0:
                        producer.cancel("abandoned")
                continue
            for producer in live:
                if producer.stream_id in stops:
                    producer.cancel("stopped")
            for producer in due:
                if producer.stream_id not in present:
                    producer.cancel("abandoned")

    async def _listen_for_stops(self) -> None:
        """Subscribed for as long as the replica runs; while Redis is away, it tries again
        with backoff (the ticker's stop keys cover the gap), and says so once."""
        failures = 0
        while True:
            try:
                async for stream_id in self._store.stop_requests():
                    failures = 0
                    producer = self._producers.get(stream_id)
                    if producer is not None:
                        producer.cancel("stopped")
            except StoreUnavailable as error:
                if failures == 0:
                    logger.warning("stop requests: subscription lost (%s); resubscribing", error)
                failures += 1
                await asyncio.sleep(min(30.0, self._tick * 2 ** min(failures, 5)))

    # -- resuming ----------------------------------------------------------------------------

    async def respond(
        self, stream_id: str, after: int, caller: str | None, gone: ClientGone = still_here
    ) -> Response:
        """The response that resumes `stream_id` after the client's `after`-th event on the
        wire (-1: from the start), in the format it was started in, from an encoder brought to
        the client's position (`bring_to`, which stops waiting for it once the client is
        `gone`); 204 when the client has everything. `ServerShuttingDown` (a retryable 503)
        when the shutdown grace runs out while it waits: the client resumes elsewhere."""
        source = await self._source(stream_id, caller)
        settings = self._settings
        encoder = FORMATS[source.format_name].make_encoder(settings, stream_id)
        shutdown = self._shutdown

        async def gone_or_cut_off() -> bool:
            if shutdown.grace_expired.is_set():
                raise server_shutting_down()
            return await gone()

        start = await bring_to(encoder, source, after, gone_or_cut_off)
        if start is None:
            return Response(status_code=204)
        return ChatStreamResponse(
            source.follow(start),
            encoder,
            timing=StreamTiming.from_settings(settings),
            on_finish=_nothing_to_record,
            cut_off=self._shutdown,
            headers={**FORMATS[source.format_name].headers, STREAM_ID_HEADER: stream_id},
            # Produced here, the producer ends it at the cut-off, with the notice, for everyone.
            goes_on_elsewhere=source.producer is None,
        )

    async def reconnect(
        self, last_event_id: str, caller: str | None, gone: ClientGone = still_here
    ) -> Response | None:
        """An `EventSource` reconnecting to the URL that started a stream: the stream its
        `Last-Event-ID` (`<stream id>:<n>`) names, resumed as by `respond` (with its errors,
        `gone` and 503 at the end of the shutdown grace included); None when no resumable
        stream has that id (the caller starts a new answer, as without REDIS_URL)."""
        stream_id, _, number = last_event_id.strip().rpartition(":")
        if not stream_id or not number.isdigit():
            return None
        try:
            return await self.respond(stream_id, int(number), caller, gone)
        except StreamNotFound:
            return None

    async def respond_to_chat(self, chat_id: str, caller: str | None) -> Response:
        """The AI SDK's `useChat` resuming a chat: its active stream, whole, from `start` (the
        SDK rebuilds the message); 204 when the chat has none, or it has ended."""
        stream_id = await self._call_store(self._store.chat_stream(chat_id, caller), chat_id)
        if stream_id is None:
            return Response(status_code=204)
        try:
            source = await self._source(stream_id, caller)
        except StreamNotFound:
            return Response(status_code=204)
        if source.finished:
            return Response(status_code=204)
        return await self.respond(stream_id, -1, caller)

    async def _source(self, stream_id: str, caller: str | None) -> Source:
        """`StreamNotFound` for an unknown id, or one started with another API key."""
        producer = self._producers.get(stream_id)
        if producer is not None:
            if producer.caller != caller:
                raise StreamNotFound(_not_found(stream_id))
            return local_source(producer, self._tick)
        stored = await self._call_store(self._store.read(stream_id), stream_id)
        if stored is None or stored.meta.get("key") != caller:
            raise StreamNotFound(_not_found(stream_id))
        batches = stored.batches
        events = [event for batch in batches for event in batch.events]
        last_entry = batches[-1].entry_id if batches else b"0-0"

        async def more() -> bool:
            nonlocal last_entry
            read = self._store.read_after(stream_id, last_entry)
            batches = await self._call_store(read, stream_id)
            for batch in batches:
                known = source.known
                events.extend(event for number, event in numbered(batch) if number >= known)
                last_entry = batch.entry_id
            return bool(batches)

        def follow_from(number: int) -> AsyncGenerator[ResponseBatch, None]:
            pending = events[max(0, number - source.first) :]
            return self._follow_stored(stream_id, pending, source.known, last_entry)

        async def producing() -> bool:
            return await self._call_store(self._store.mark_reader(stream_id), stream_id)

        first = batches[0].first if batches else 0
        # An event a client has seen is stored after the writer's linger and at most two writes
        # (the one under way, then its own), or never: then the stream is no longer resumable.
        # Replicas are taken to share their Redis settings.
        lag = FLUSH_INTERVAL_SECONDS + 2 * self._store.command_seconds
        fmt = str(stored.meta["format"])
        source = Source(
            stream_id, fmt, events, first, more, follow_from, lag=lag, producing=producing
        )
        return source

    async def _call_store(self, call: Awaitable[T], stream_id: str) -> T:
        try:
            return await call
        except StoreUnavailable as error:
            self._unavailable(f"cannot resume {stream_id}", error)
            raise ResumeUnavailable(_UNAVAILABLE) from None

    async def _follow_stored(
        self, stream_id: str, pending: list[ResponseEvent], next_number: int, last_entry: bytes
    ) -> AsyncGenerator[ResponseBatch, None]:
        """Events from the store: `pending` (already read), then what the producer appends,
        until the terminal event, a batch per read from the store; a retryable `stream_lost`
        error when the producer's lease lapses without one (its replica died)."""
        terminal = next((n for n, event in enumerate(pending) if is_terminal(event)), None)
        if terminal is not None:
            yield pending[: terminal + 1]
            return
        if pending:
            yield pending
        loop = asyncio.get_running_loop()
        store = self._store
        marked_at = -self._tick
        try:
            while True:
                lease_held = True
                if loop.time() - marked_at >= self._tick:
                    lease_held = await store.mark_reader(stream_id)
                    marked_at = loop.time()
                batches = await store.read_after(stream_id, last_entry, block=lease_held)
                if not batches and not lease_held:
                    yield [StreamFailed(StreamLost(_lost(stream_id)))]
                    return
                out: ResponseBatch = []
                for batch in batches:
                    for number, event in numbered(batch):
                        if number < next_number:
                            continue
                        if number > next_number:
                            out.append(
                                StreamFailed(
                                    StreamEventsExpired(f"events of {stream_id} were trimmed")
                                )
                            )
                            yield out
                            return
                        next_number += 1
                        out.append(event)
                        if is_terminal(event):
                            yield out
                            return
                    last_entry = batch.entry_id
                if out:
                    yield out
        except StoreUnavailable as error:
            self._unavailable(f"lost the store while resuming {stream_id}", error)
            yield [
                StreamFailed(
                    ResumeUnavailable(
                        "the stream store became unreachable; the stream cannot go on"
                    )
                )
            ]

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self, stream_id: str, caller: str | None) -> str:
        """Stop the stream (or a chat's active stream: `stream_id` may be a `useChat` chat
        id) wherever it is produced: `stopped` once its end is known, `finished` if it had
        ended already, `stopping` if the end did not show in time."""
        producer = self._producers.get(stream_id)
        if producer is not None:
            if producer.caller != caller:
                raise StreamNotFound(_not_found(stream_id))
            if producer.finished:
                return "finished"
            producer.cancel("stopped")
            await producer.wait()
            return "stopped"
        try:
            source = await self._source(stream_id, caller)
        except StreamNotFound:
            active = await self._call_store(self._store.chat_stream(stream_id, caller), stream_id)
            if active is None or active == stream_id:
                raise
            return await self.stop(active, caller)
        if source.finished:
            return "finished"
        events = source.follow(source.known)
        try:
            await self._store.request_stop(stream_id)
        except StoreUnavailable as error:
            await events.aclose()
            self._unavailable(f"cannot stop {stream_id}", error)
            raise ResumeUnavailable(_UNAVAILABLE) from None
        return await _wait_for_end(events, STOP_CONFIRM_SECONDS)


def _nothing_to_record(delivery: Delivery) -> None:
    """A resuming client's response: the stream is recorded once, by its producer."""


async def _wait_for_end(events: AsyncGenerator[ResponseBatch, None], seconds: float) -> str:
    try:
        async with asyncio.timeout(seconds):
            async for _ in events:
                pass
        return "stopped"
    except TimeoutError:
        return "stopping"
    finally:
        await events.aclose()


def _not_found(stream_id: str) -> str:
    return f"no resumable stream {stream_id} (it may have ended over RESUME_TTL_SECONDS ago)"


def _lost(stream_id: str) -> str:
    return (
        f"the replica producing stream {stream_id} stopped before it ended; "
        "ask again to get a new answer"
    )
