"""The ASGI response for one chat stream: status first, then events, cancelled on disconnect.

Two phases:

1. *Before headers.* Wait for the first response batch while watching for the client leaving.
   If its first event is a `StreamFailed`, nothing has been said yet, so the client gets a real
   HTTP error (status from the error, JSON body). If the client leaves, the event iterator is
   closed, which closes the upstream request, even while the upstream has not answered yet or
   the SDK is sleeping between retries. For a format with a heartbeat (SSE; NDJSON when
   enabled), headers and a first heartbeat go out after `heartbeat_seconds` without a first
   event, so that proxies do not time the stream out; an error after that point travels
   in-band. A format without one keeps waiting, so its status stays real.
2. *Streaming.* Four tasks, the first to finish ends the response and the others are
   cancelled: the sender (each batch of events -> encoder -> one `send`; the terminal event's
   batch and the end marker in one), the disconnect listener, a monitor that
   sends the heartbeat after `heartbeat_seconds` without a write and drops a client that has not
   accepted a write for `send_timeout_seconds`, and the shutdown watch: when the grace period
   after SIGTERM runs out, the sender is cancelled and the stream ends with an in-band
   `server_shutting_down` error and the format's end marker (`service.shutdown`).

Whatever ends a stream that has started, the client gets a terminal event and the end marker
unless it is gone or not reading: an unexpected failure is logged and sent in-band as
`internal_error`. Nothing is ever sent after the end marker.

Cancelling the sender closes the event iterator in its `finally`, and so the upstream request:
each layer below closes its own inner iterator (`contextlib.aclosing`), so nothing waits for
garbage collection. The client leaving is learnt from the server's `http.disconnect` message
(https://asgi.readthedocs.io/en/latest/specs/www.html#disconnect-receive-event), never by
polling `is_disconnected()` per token. How the response ended (a `service.outcomes.Delivery`)
is reported exactly once, through `on_finish`, however it ends: the caller releases the stream
slot and records the stream there.

Why not sse-starlette's `EventSourceResponse`: its send path costs ~12 µs per event (an anyio
cancel scope per send, for the send timeout), 40% of the per-token budget (issue #2), while
this loop keeps the send timeout as a timestamp the monitor reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.error_responses import ErrorRenderer, error_response
from service.errors import InternalError, ServiceError, server_shutting_down
from service.events import ResponseBatch, StreamEnded, StreamFailed
from service.http.server_protocol import DIRECT_SEND
from service.outcomes import Delivery
from service.settings import Settings
from service.wire.base import Encoder

logger = logging.getLogger("service.http")

STREAM_HEADERS = {
    # Proxies and browsers must not cache or transform a live stream.
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told not to, per response:
    # https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_buffering
    "X-Accel-Buffering": "no",
}
# The events that end a stream (final classes: `type` is enough).
_TERMINAL = frozenset({StreamEnded, StreamFailed})
# A resumable stream's id (`service.resume`), for clients of formats without event ids (NDJSON,
# plain text) to resume with.
STREAM_ID_HEADER = "X-Stream-Id"


@dataclass(frozen=True, slots=True)
class StreamTiming:
    # A heartbeat after this long without a write (formats that have one).
    heartbeat_seconds: float
    # A client that accepts no bytes for this long is dropped.
    send_timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamTiming:
        return cls(settings.heartbeat_seconds, settings.send_timeout_seconds)


class SendTimeout(Exception):
    """The client accepted no bytes for `send_timeout_seconds`."""


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _body_send(scope: Scope, send: Send) -> Send:
    """Where the body goes once the start has gone through `send`: the server's own send when
    it offers one (`DIRECT_SEND`), past the middleware. Every middleware of this app reads only
    a response's start (the status for the access log, CORS headers, Starlette's and FastAPI's
    "has it started" flags; `service.app` installs no other), and each of them wrapped every
    event's write in another coroutine call: ~6% of the CPU per token (issue #16)."""
    direct = scope.get("extensions", {}).get(DIRECT_SEND)
    body_send: Send = direct["send"] if direct is not None else send
    return body_send


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a finished task's exception as seen, so asyncio does not log it on collection."""
    if task.done() and not task.cancelled():
        task.exception()


class ChatStreamResponse(Response):
    """Streams `events` through `encoder`; see the module docstring for the phases."""

    media_type = "text/event-stream"  # the default format, for the OpenAPI document

    def __init__(
        self,
        events: AsyncGenerator[ResponseBatch, None],
        encoder: Encoder,
        *,
        timing: StreamTiming,
        on_finish: Callable[[Delivery], None],
        on_heartbeat: Callable[[], None] | None = None,
        cut_off: asyncio.Event | None = None,
        headers: Mapping[str, str] | None = None,
        render_error: ErrorRenderer = error_response,
        goes_on_elsewhere: bool = False,
    ) -> None:
        """`on_finish` is called once with how the response ended, `on_heartbeat` after each
        heartbeat sent; `cut_off`, when set, ends the stream in-band as `server_shutting_down`
        (the shutdown grace ran out), or, when the stream `goes_on_elsewhere` (a client
        following a resumable stream produced by another replica), ends the body with neither
        notice nor end marker, so that the client resumes it from another replica (an
        `EventSource` does so by itself); `render_error` gives an error before the first event
        its shape (the endpoint family's: `service.error_responses`)."""
        self._events = events
        self._render_error = render_error
        self._encoder = encoder
        self._heartbeat_seconds = timing.heartbeat_seconds
        self._send_timeout_seconds = timing.send_timeout_seconds
        self._cut_off = cut_off
        self._goes_on_elsewhere = goes_on_elsewhere
        self._on_finish = on_finish
        self._on_heartbeat = on_heartbeat
        self.background = None
        self.status_code = 200
        self.media_type = encoder.media_type
        self.init_headers({**STREAM_HEADERS, **(headers or {})})
        # Loop times of the last completed write, and of the write in progress (None if idle).
        self._last_write_at = 0.0
        self._writing_since: float | None = None
        self._terminal_sent = False  # an end or error event went out
        self._closed = False  # the last message (more_body False) went out
        # Heartbeats and events never interleave inside a write: the monitor holds this while
        # it writes a heartbeat, and writes none while an event's write is in progress.
        self._send_lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        delivery: Delivery = "internal_error"
        try:
            delivery = await self._respond(scope, receive, send)
        finally:
            self._on_finish(delivery)

    async def _grace_expired(self) -> None:
        if self._cut_off is None:
            await asyncio.Future()  # never
        else:
            await self._cut_off.wait()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> Delivery:
        first: asyncio.Future[ResponseBatch] = asyncio.ensure_future(anext(self._events))
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        stopping = asyncio.ensure_future(self._grace_expired())
        try:
            ended = await self._open(scope, receive, send, first, disconnected, stopping)
        except BaseException:
            disconnected.cancel()
            stopping.cancel()
            await self._discard(first)
            raise
        if ended is not None:
            disconnected.cancel()
            stopping.cancel()
            return ended
        return await self._stream(_body_send(scope, send), first, disconnected, stopping)

    async def _open(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        first: asyncio.Future[ResponseBatch],
        disconnected: asyncio.Future[None],
        stopping: asyncio.Future[None],
    ) -> Delivery | None:
        """Phase 1: the response's status. Returns how it ended, or None once headers are out
        and the stream goes on."""
        heartbeat = self._encoder.heartbeat
        await asyncio.wait(
            (first, disconnected, stopping),
            timeout=self._heartbeat_seconds if heartbeat is not None else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if disconnected.done() or stopping.done():
            await self._discard(first)
            if disconnected.done():
                return "client_left"
            await self._render_error(server_shutting_down())(scope, receive, send)
            return "shutdown"
        if first.done():
            failure = first.exception()
            if failure is not None:
                logger.error("stream failed before its first event", exc_info=failure)
                await self._discard(first)
                await self._render_error(InternalError())(scope, receive, send)
                return "internal_error"
            opening = first.result()[0]
            if isinstance(opening, StreamFailed):
                await self._discard(first)
                await self._render_error(opening.error)(scope, receive, send)
                return "refused"
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if not first.done() and heartbeat is not None:
            # Headers went out early for the heartbeat's sake: the first one goes with them.
            await send({"type": "http.response.body", "body": heartbeat, "more_body": True})
            self._heartbeat_sent()
        return None

    async def _stream(
        self,
        send: Send,
        first: asyncio.Future[ResponseBatch],
        disconnected: asyncio.Future[None],
        stopping: asyncio.Future[None],
    ) -> Delivery:
        """Phase 2: events until the first of the four tasks ends."""
        self._last_write_at = asyncio.get_running_loop().time()
        sender = asyncio.ensure_future(self._send_events(send, first))
        monitor = asyncio.ensure_future(self._monitor(send))
        tasks = (sender, disconnected, monitor, stopping)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            for task in tasks:
                _retrieve(task)
        if not sender.cancelled():
            failure = sender.exception()
            if failure is None:
                return "delivered"
            if isinstance(failure, OSError):  # the server reports the client gone
                return "client_left"
            logger.error("stream failed while sending", exc_info=failure)
            await self._end_in_band(send, InternalError())
            return "internal_error"
        if disconnected.done() and not disconnected.cancelled():
            return "client_left"
        if not monitor.cancelled():
            problem = monitor.exception()
            if isinstance(problem, SendTimeout):
                logger.warning(
                    "client accepted no bytes for %ss; stream dropped", self._send_timeout_seconds
                )
                return "send_timeout"
            logger.error("heartbeat monitor failed", exc_info=problem)
            await self._end_in_band(send, InternalError())
            return "internal_error"
        # Short: uvicorn's own graceful timeout (grace + 5 s) must not cut the notice off.
        await self._end_in_band(
            send,
            server_shutting_down(),
            within=min(2.0, self._send_timeout_seconds),
            notice=not self._goes_on_elsewhere,
        )
        return "shutdown"

    async def _send_events(self, send: Send, first: asyncio.Future[ResponseBatch]) -> None:
        encoder = self._encoder
        encode = encoder.encode
        lock = self._send_lock
        loop_time = asyncio.get_running_loop().time
        try:
            batch = await first
            while True:
                # One write per batch: the events one upstream read brought (issue #16).
                body = encode(batch[0]) if len(batch) == 1 else b"".join(map(encode, batch))
                if type(batch[-1]) in _TERMINAL:
                    # Nothing follows a terminal event: the end marker goes in the same write.
                    self._terminal_sent = True
                    async with lock:
                        self._writing_since = loop_time()
                        await send(
                            {
                                "type": "http.response.body",
                                "body": body + encoder.close(),
                                "more_body": False,
                            }
                        )
                        self._closed, self._writing_since = True, None
                    return
                if body:
                    if lock.locked():  # a heartbeat is going out: wait until it is written
                        async with lock:
                            pass
                    # No lock taken: the monitor writes nothing while `_writing_since` is set
                    # (two coroutine calls per token saved, issue #12).
                    self._writing_since = loop_time()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    self._last_write_at, self._writing_since = loop_time(), None
                try:
                    batch = await anext(self._events)
                except StopAsyncIteration:
                    break
            async with lock:
                self._writing_since = loop_time()
                await send(
                    {"type": "http.response.body", "body": encoder.close(), "more_body": False}
                )
                self._closed, self._writing_since = True, None
        finally:
            await self._discard(first)

    async def _monitor(self, send: Send) -> None:
        """Heartbeats when idle; raises `SendTimeout` when a write has been stuck too long."""
        loop = asyncio.get_running_loop()
        heartbeat = self._encoder.heartbeat
        interval, limit = self._heartbeat_seconds, self._send_timeout_seconds
        while not self._closed:
            now = loop.time()
            if self._writing_since is not None:
                if now - self._writing_since >= limit:
                    raise SendTimeout
                wake_in = self._writing_since + limit - now
            elif heartbeat is None or self._send_lock.locked():
                wake_in = min(limit, interval)
            elif now - self._last_write_at >= interval:
                try:
                    async with self._send_lock, asyncio.timeout(limit):
                        if self._closed:
                            return
                        await send(
                            {"type": "http.response.body", "body": heartbeat, "more_body": True}
                        )
                except TimeoutError:
                    raise SendTimeout from None
                self._last_write_at = loop.time()
                self._heartbeat_sent()
                wake_in = interval
            else:
                # Never sleep longer than the send timeout: a write that starts now and gets
                # stuck is noticed within twice the timeout at most.
                wake_in = min(limit, interval - (now - self._last_write_at))
            await asyncio.sleep(max(wake_in, 0.01))

    def _heartbeat_sent(self) -> None:
        if self._on_heartbeat is not None:
            self._on_heartbeat()

    async def _end_in_band(
        self, send: Send, error: ServiceError, within: float | None = None, notice: bool = True
    ) -> None:
        """End a stream that was cut: the error event (unless a terminal event already went
        out) and the end marker (neither without `notice`), never anything after the end
        marker. Bounded by the send timeout, so a stalled client cannot hold the process."""
        if self._closed:
            return
        body = b""
        if notice:
            body = b"" if self._terminal_sent else self._encoder.encode(StreamFailed(error))
            body += self._encoder.close()
        try:
            async with asyncio.timeout(within or self._send_timeout_seconds):
                await send({"type": "http.response.body", "body": body, "more_body": False})
            self._closed = True
        except (TimeoutError, OSError):
            logger.warning("could not send the end of a cut stream; connection dropped")

    async def _discard(self, first: asyncio.Future[ResponseBatch]) -> None:
        """Close the event iterator, first cancelling a read still in flight in `first`."""
        if not first.done():
            first.cancel()
            await asyncio.wait((first,))
        _retrieve(first)
        await self._events.aclose()
