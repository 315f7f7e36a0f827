"""The stream store on Redis: the only module that imports `redis` (issue #13).

Keys, each under `REDIS_KEY_PREFIX` (`p`) and a stream id:

    p<id>:meta      JSON {format, key, replica}: created with SET NX, so an id is taken once
    p<id>:events    a Redis Stream of the stream's response events (`service.resume.codec`)
    p<id>:lease     the producing replica's id, renewed every tick; gone = producer dead
    p<id>:readers   set by clients resuming on other replicas, expiring after the grace period
    p<id>:stop      a stop request, for a producer that missed the pub/sub message
    pstop           the channel that carries ids to stop to every replica at once
    pchat:<key>:<chat id>   the stream id of a `useChat` chat's latest stream (per API key)

Event numbers and entry ids: the events of a stream are numbered from 0 (the `start` event),
which is also the `<stream id>:<n>` SSE id a client sees. An entry holds a batch of consecutive
events, and its id is `0-<n + 1>` for the last event `n` in it (entry ids must be above `0-0`).
The producer picks the ids, so an event's id is known before it is stored and the client's own
bytes never wait for Redis; and the ids say where to resume: the events after `n` are in the
entries from `0-<n + 2>` on (`XRANGE`), then whatever `XREAD BLOCK` brings. `XADD ... MINID`
keeps the last `RESUME_MAX_EVENTS` events (and the rest of the oldest batch among them), and
every key expires `RESUME_TTL_SECONDS` after the stream's last sign of life.

Errors of the client (`redis.RedisError`) are translated here, once, into `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.errors import StreamExists
from service.events import ResponseEvent
from service.resume.codec import pack_batch, unpack_batch
from service.settings import Settings

logger = logging.getLogger("service.resume")

# Creates the stream's meta key only if the id is new, the producer's lease with it, and, for
# a `useChat` chat, names it as the chat's active stream.
_CREATE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
    if KEYS[3] then
        redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[2])
    end
    return 1
end
return 0
"""


class StoreUnavailable(Exception):
    """Redis could not be reached, or failed a command."""


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """One entry of a stream's events: `events[i]` is event number `first + i`."""

    entry_id: bytes
    first: int
    events: list[ResponseEvent]


@dataclass(frozen=True, slots=True)
class Append:
    """What the writer stores for one stream in one flush."""

    stream_id: str
    last: int  # the number of the batch's last event
    packed: list[str]
    finished: bool  # the batch ends the stream: keys get their final TTL, the lease goes


@dataclass(frozen=True, slots=True)
class StoredStream:
    meta: dict[str, Any]
    batches: list[StoredBatch]
    lease_held: bool


def entry_id_after(number: int) -> bytes:
    """The smallest entry id that can hold events after `number`."""
    return b"0-%d" % (number + 2)


def _parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> StoredBatch:
    last = int(entry_id.split(b"-", 1)[1]) - 1
    events = unpack_batch(fields[b"e"])
    return StoredBatch(entry_id, last - len(events) + 1, events)


class StreamStore:
    def __init__(self, settings: Settings, *, block_seconds: float) -> None:
        assert settings.redis_url is not None
        timeout = settings.redis_timeout_seconds
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url.get_secret_value(),
            # Every stream being created and every resuming client's blocking read holds a
            # connection; past this many, they wait up to `timeout` for one.
            max_connections=2 * settings.max_concurrent_streams + 8,
            timeout=timeout,
            socket_connect_timeout=timeout,
            # A blocking read waits up to `block_seconds` for Redis's answer.
            socket_timeout=timeout + block_seconds,
            # No retries: an unreachable Redis is reported at once and streams go on without it.
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = redis.Redis.from_pool(pool)  # which it closes with itself
        self._prefix = settings.redis_key_prefix
        self._ttl_ms = int(settings.resume_ttl_seconds * 1000)
        self._lease_ms = int(settings.resume_lease_seconds * 1000)
        self._grace_ms = int(settings.resume_grace_seconds * 1000)
        self._max_events = settings.resume_max_events
        self._block_ms = max(1, int(block_seconds * 1000))
        # About the longest a command takes before it fails: the wait for a pooled connection,
        # then the socket's timeout (a reconnect on the way can add a connect timeout).
        self.command_seconds = 2 * timeout + block_seconds
        self.stop_channel = self._prefix + "stop"

    def key(self, stream_id: str, part: str) -> str:
        return f"{self._prefix}{stream_id}:{part}"

    async def aclose(self) -> None:
        await self._redis.aclose()

    def chat_key(self, chat_id: str, caller: str | None) -> str:
        return f"{self._prefix}chat:{caller or '-'}:{chat_id}"

    async def create(
        self, stream_id: str, meta: dict[str, Any], replica: str, *, chat_id: str | None = None
    ) -> None:
        """Take `stream_id` (`StreamExists` if it is taken) and this replica's lease on it; with
        `chat_id`, make it that chat's active stream."""
        keys = [self.key(stream_id, "meta"), self.key(stream_id, "lease")]
        if chat_id is not None:
            keys.append(self.chat_key(chat_id, meta.get("key")))
        try:
            created = await self._redis.eval(
                _CREATE,
                len(keys),
                *keys,
                json.dumps(meta),
                self._ttl_ms,
                replica,
                self._lease_ms,
                stream_id,
            )
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        if not created:
            raise StreamExists(f"a stream with the id {stream_id} exists already")

    async def append(self, appends: Sequence[Append]) -> list[bool]:
        """Store each stream's batch in one round trip; whether each one was stored."""
        pipe = self._redis.pipeline(transaction=False)
        for append in appends:
            events = self.key(append.stream_id, "events")
            pipe.execute_command(
                "XADD",
                events,
                "MINID",  # exact: entries are few, and the bound is then the setting's
                b"0-%d" % max(1, append.last + 1 - self._max_events),
                b"0-%d" % (append.last + 1),
                "e",
                pack_batch(append.packed),
            )
            if append.finished:
                pipe.pexpire(events, self._ttl_ms)
                pipe.pexpire(self.key(append.stream_id, "meta"), self._ttl_ms)
                pipe.delete(self.key(append.stream_id, "lease"))
        try:
            results = await pipe.execute(raise_on_error=False)
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        stored = []
        position = 0
        for append in appends:
            stored.append(not isinstance(results[position], Exception))
            position += 4 if append.finished else 1
        return stored

    async def tick(
        self,
        producing: Sequence[tuple[str, str | None]],
        detached: Sequence[str],
        replica: str,
    ) -> tuple[set[str], set[str]]:
        """For the streams this replica produces (id, chat key): renew their leases and keys'
        TTLs, and find which are asked to stop; for those without a client here, which have one
        elsewhere. Returns (ids to stop, ids with a reader elsewhere)."""
        pipe = self._redis.pipeline(transaction=False)
        for stream_id, chat_key in producing:
            pipe.set(self.key(stream_id, "lease"), replica, px=self._lease_ms)
            pipe.pexpire(self.key(stream_id, "meta"), self._ttl_ms)
            pipe.pexpire(self.key(stream_id, "events"), self._ttl_ms)
            pipe.pexpire(chat_key or self.key(stream_id, "meta"), self._ttl_ms)
            pipe.exists(self.key(stream_id, "stop"))
        for stream_id in detached:
            pipe.exists(self.key(stream_id, "readers"))
        try:
            results = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        stops = {sid for index, (sid, _) in enumerate(producing) if results[5 * index + 4]}
        offset = 5 * len(producing)
        present = {sid for index, sid in enumerate(detached) if results[offset + index]}
        return stops, present

    async def chat_stream(self, chat_id: str, caller: str | None) -> str | None:
        """The id of the chat's latest stream started with this caller's key, if any."""
        try:
            stream_id = await self._redis.get(self.chat_key(chat_id, caller))
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        if isinstance(stream_id, bytes):
            return stream_id.decode()
        return stream_id

    async def read(self, stream_id: str) -> StoredStream | None:
        """The stream's meta and every stored event, or None for an unknown (or expired) id."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self.key(stream_id, "meta"))
        pipe.xrange(self.key(stream_id, "events"))
        pipe.exists(self.key(stream_id, "lease"))
        try:
            meta, entries, lease = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        if meta is None:
            return None
        batches = [_parse_entry(entry_id, fields) for entry_id, fields in entries]
        return StoredStream(json.loads(meta), batches, bool(lease))

    async def read_after(
        self, stream_id: str, entry_id: bytes, *, block: bool = True
    ) -> list[StoredBatch]:
        """The entries after `entry_id`, waiting up to a tick for one when `block`."""
        try:
            # RESP2's reply shape: [[key, [(entry id, fields), ...]]].
            answer: Any = await self._redis.xread(
                {self.key(stream_id, "events"): entry_id}, block=self._block_ms if block else None
            )
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        if not answer:
            return []
        _, entries = answer[0]
        return [_parse_entry(entry_id, fields) for entry_id, fields in entries]

    async def mark_reader(self, stream_id: str) -> bool:
        """A client follows this stream from here: the producer must not give up on it for a
        grace period. Also says whether the producer's lease is still held."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self.key(stream_id, "readers"), 1, px=self._grace_ms)
        pipe.exists(self.key(stream_id, "lease"))
        try:
            _, lease = await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        return bool(lease)

    async def request_stop(self, stream_id: str) -> None:
        """Ask whichever replica produces the stream to stop it: at once through the channel,
        and through a key its next tick reads, should it have missed the message."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self.key(stream_id, "stop"), 1, px=self._ttl_ms)
        pipe.publish(self.stop_channel, stream_id)
        try:
            await pipe.execute()
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error

    async def stop_requests(self) -> AsyncIterator[str]:
        """The ids published on the stop channel, as they come; `StoreUnavailable` when the
        subscription breaks (the caller subscribes again)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.stop_channel)
            while True:
                message = await pubsub.get_message(timeout=self._block_ms / 1000)
                if message is not None and message["type"] == "message":
                    yield message["data"].decode()
        except RedisError as error:
            raise StoreUnavailable(str(error)) from error
        finally:
            # Closing the subscription must not hang on a Redis that went away.
            try:
                async with asyncio.timeout(1):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (TimeoutError, RedisError):
                pass
