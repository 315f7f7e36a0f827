"""The ASGI response for one chat stream: status first, then events, cancelled on disconnect.

Two phases:

1. *Before headers.* Wait for the first response event while watching for the client leaving.
   If the first event is a `StreamFailed`, nothing has been said yet, so the client gets a real
   HTTP error (status from the error, JSON body). If the client leaves, the event iterator is
   closed, which closes the upstream request, even while the upstream has not answered yet or
   the SDK is sleeping between retries. If the first event takes longer than one heartbeat
   interval, headers go out anyway so that heartbeats can keep proxies from timing the stream
   out; an error after that point travels in-band.
2. *Streaming.* Four tasks, the first to finish ends the response and the others are
   cancelled: the sender (events -> encoder -> `send`), the disconnect listener, a monitor that
   sends the format's heartbeat after `heartbeat_seconds` without a write and drops a client
   that has not accepted a write for `send_timeout_seconds`, and the shutdown watch: when the
   grace period after SIGTERM runs out, the sender is cancelled and the stream ends with an
   in-band `server_shutting_down` error and the format's end marker (`service.shutdown`).

The stream slot (`service.limits`) is given back when the response ends, however it ends.

Cancelling the sender closes the event iterator in its `finally`, and so the upstream request:
each layer below closes its own inner iterator (`contextlib.aclosing`), so nothing waits for
garbage collection. The client leaving is learnt from the server's `http.disconnect` message
(https://asgi.readthedocs.io/en/latest/specs/www.html#disconnect-receive-event), never by
polling `is_disconnected()` per token.

Why not sse-starlette's `EventSourceResponse`: its send path costs ~12 µs per event (an anyio
cancel scope per send, for the send timeout), 40% of the per-token budget (issue #2), while
this loop keeps the send timeout as a timestamp the monitor reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.errors import ServerShuttingDown, ServiceError
from service.events import ResponseEvent, StreamFailed
from service.limits import StreamSlot
from service.shutdown import ShutdownCoordinator
from service.wire.base import Encoder
from service.wire.payloads import error_body

logger = logging.getLogger("service.http")

STREAM_HEADERS = {
    # Proxies and browsers must not cache or transform a live stream.
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told not to, per response:
    # https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_buffering
    "X-Accel-Buffering": "no",
}


class SendTimeout(Exception):
    """The client accepted no bytes for `send_timeout_seconds`."""


SHUTTING_DOWN = ServerShuttingDown("the server is shutting down; retry the request")


def error_response(error: ServiceError) -> Response:
    return Response(
        error_body(error.as_dict()),
        status_code=error.status_code,
        headers=error.headers(),
        media_type="application/json",
    )


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ChatStreamResponse(Response):
    """Streams `events` through `encoder`; see the module docstring for the phases."""

    media_type = "text/event-stream"  # the default format, for the OpenAPI document

    def __init__(
        self,
        events: AsyncGenerator[ResponseEvent, None],
        encoder: Encoder,
        *,
        heartbeat_seconds: float,
        send_timeout_seconds: float,
        headers: Mapping[str, str] | None = None,
        slot: StreamSlot | None = None,
        shutdown: ShutdownCoordinator | None = None,
    ) -> None:
        self._events = events
        self._slot = slot
        self._shutdown = shutdown
        self._encoder = encoder
        self._heartbeat_seconds = heartbeat_seconds
        self._send_timeout_seconds = send_timeout_seconds
        self.background = None
        self.status_code = 200
        self.media_type = encoder.media_type
        self.init_headers({**STREAM_HEADERS, **(headers or {})})
        # Loop times of the last completed write, and of the write in progress (None if idle).
        self._last_write_at = 0.0
        self._writing_since: float | None = None
        # Heartbeats and events never interleave inside a write, and none follows the last.
        self._send_lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._respond(scope, receive, send)
        finally:
            if self._slot is not None:
                self._slot.release()

    async def _grace_expired(self) -> None:
        if self._shutdown is None:
            await asyncio.Future()  # never
        else:
            await self._shutdown.grace_expired.wait()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        first: asyncio.Future[ResponseEvent] = asyncio.ensure_future(anext(self._events))
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        stopping = asyncio.ensure_future(self._grace_expired())
        try:
            await asyncio.wait(
                (first, disconnected, stopping),
                timeout=self._heartbeat_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:  # the server cancelled us: leave nothing running
            disconnected.cancel()
            stopping.cancel()
            await self._discard(first)
            raise
        if disconnected.done() or stopping.done():
            disconnected.cancel()
            stopping.cancel()
            await self._discard(first)
            if stopping.done():
                await error_response(SHUTTING_DOWN)(scope, receive, send)
            return
        if first.done() and not first.cancelled() and first.exception() is None:
            opening = first.result()
            if isinstance(opening, StreamFailed):
                disconnected.cancel()
                stopping.cancel()
                await self._discard(first)
                await error_response(opening.error)(scope, receive, send)
                return

        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if scope.get("method") == "HEAD":
            disconnected.cancel()
            stopping.cancel()
            await self._discard(first)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
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
        failure = None if sender.cancelled() else sender.exception()
        if failure is not None and not isinstance(failure, OSError):  # OSError: client gone
            raise failure
        if not monitor.cancelled() and isinstance(monitor.exception(), SendTimeout):
            logger.warning(
                "client accepted no bytes for %ss; stream dropped", self._send_timeout_seconds
            )
        elif sender.cancelled() and not stopping.cancelled():
            await self._farewell(send)

    async def _farewell(self, send: Send) -> None:
        """End a stream cut by shutdown the way the format ends an error: never without a
        terminal event. Bounded by the send timeout: a stalled client does not hold the exit."""
        body = self._encoder.encode(StreamFailed(SHUTTING_DOWN)) + self._encoder.close()
        try:
            async with asyncio.timeout(self._send_timeout_seconds):
                await send({"type": "http.response.body", "body": body, "more_body": False})
        except (TimeoutError, OSError):
            logger.warning("could not send the shutdown notice; connection dropped")

    async def _send_events(self, send: Send, first: asyncio.Future[ResponseEvent]) -> None:
        encoder = self._encoder
        lock = self._send_lock
        loop_time = asyncio.get_running_loop().time
        try:
            event = await first
            while True:
                body = encoder.encode(event)
                async with lock:
                    self._writing_since = loop_time()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    self._last_write_at, self._writing_since = loop_time(), None
                try:
                    event = await anext(self._events)
                except StopAsyncIteration:
                    break
            async with lock:
                await send(
                    {"type": "http.response.body", "body": encoder.close(), "more_body": False}
                )
        finally:
            await self._discard(first)

    async def _monitor(self, send: Send) -> None:
        """Heartbeats when idle; raises `SendTimeout` when a write has been stuck too long."""
        loop = asyncio.get_running_loop()
        heartbeat = self._encoder.heartbeat
        interval, limit = self._heartbeat_seconds, self._send_timeout_seconds
        while True:
            now = loop.time()
            if self._writing_since is not None:
                if now - self._writing_since >= limit:
                    raise SendTimeout
                wake_in = self._writing_since + limit - now
            elif heartbeat is None:
                wake_in = limit
            elif now - self._last_write_at >= interval and not self._send_lock.locked():
                try:
                    async with self._send_lock, asyncio.timeout(limit):
                        await send(
                            {"type": "http.response.body", "body": heartbeat, "more_body": True}
                        )
                except TimeoutError:
                    raise SendTimeout from None
                self._last_write_at = loop.time()
                wake_in = interval
            else:
                wake_in = max(0.001, min(limit, interval - (now - self._last_write_at)))
            await asyncio.sleep(wake_in)

    async def _discard(self, first: asyncio.Future[ResponseEvent]) -> None:
        """Close the event iterator, first cancelling a read still in flight in `first`."""
        if not first.done():
            first.cancel()
            await asyncio.wait((first,))
        elif not first.cancelled():
            first.exception()  # retrieved, so asyncio does not log it as never retrieved
        await self._events.aclose()
