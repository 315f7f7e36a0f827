"""The ASGI response for one chat stream: status first, then events, cancelled on disconnect.

Two phases, both run by a task of the stream's own, one batch of events (one upstream read) per
write:

1. *Before headers.* Wait for the first batch. If its first event is a `StreamFailed`, nothing
   has been said yet, so the client gets a real HTTP error (status from the error, JSON body).
   For a format with a heartbeat (SSE; NDJSON when enabled), headers and a first heartbeat go
   out after `heartbeat_seconds` without a first batch, so that proxies do not time the stream
   out; an error after that point travels in-band. A format without one keeps waiting, so its
   status stays real.
2. *Streaming.* Each batch is encoded and written with one `send`; the terminal event's batch
   and the format's end marker go in one last write. Once the first batch is out, a stream whose
   upstream and server both allow it is pushed (`service.push`): each later batch is encoded
   and written synchronously in the upstream's socket callback (`DirectBody.write`), this
   response being the pipeline's `ResponseSink`, and the task only waits for the terminal
   batch, which goes out through the server's `send`. A full client buffer pauses the upstream
   until it drains; the send timeout counts from the moment it filled.

Whatever stops a stream from outside interrupts its task where it waits (a read from the
upstream, or a write to a client that stopped reading), by cancelling it with its reason noted
and taking the cancellation back once it is handled (`Task.uncancel`, as `asyncio.timeout`
does; a cancellation of the request from elsewhere is never swallowed):

- the client leaving, learnt from the server's `http.disconnect` message by the one task
  listening for it (https://asgi.readthedocs.io/en/latest/specs/www.html#disconnect-receive-event),
  never by polling `is_disconnected()` per token: the stream just stops;
- the shutdown grace running out (`service.shutdown`, a callback): an in-band
  `server_shutting_down` error and the end marker (a 503 before headers);
- a client that accepted no write for `send_timeout_seconds`: the stream is dropped.

One timer per stream, re-armed when it fires, sends the heartbeat after `heartbeat_seconds`
without a write (from a short task of its own: the stream's task may be waiting on the
upstream) and notices a write stuck too long; heartbeats and events never interleave inside a
write. So a stream costs two tasks (its own and the disconnect listener) and no wait on
several of them, and nothing per token beyond its write (issue #16). Its own task keeps the
per-token suspensions shallow: under the request's task lie a score of middleware and routing
frames, which each suspension would pass twice.

Whatever ends a stream that has started, the client gets a terminal event and the end marker
unless it is gone or not reading: an unexpected failure is logged and sent in-band as
`internal_error`. Nothing is ever sent after the end marker. Closing the event iterator closes
the upstream request: each layer below closes its own inner iterator
(`contextlib.aclosing`), so nothing waits for garbage collection. How the response ended (a
`service.outcomes.Delivery`) is reported exactly once, through `on_finish`, however it ends:
the caller releases the stream slot and records the stream there.

Why not sse-starlette's `EventSourceResponse`: its send path costs ~12 µs per event (an anyio
cancel scope per send, for the send timeout), 40% of the per-token budget (issue #2), while
this one keeps the send timeout as a timestamp the timer reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from service.error_responses import ErrorRenderer, error_response
from service.errors import InternalError, ServiceError, server_shutting_down
from service.events import ResponseBatch, ResponseBatches, StreamEnded, StreamFailed
from service.http.server_protocol import DIRECT_BODY, DirectBody
from service.outcomes import Delivery
from service.push import PushSource, ResponseSink, pushable
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


class CutOff(Protocol):
    """What ends streams at the end of the shutdown grace (`service.shutdown`)."""

    def on_grace_expired(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when the grace has run out (at once if it has); returns the way to
        call it off."""
        ...


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _direct_body(scope: Scope) -> DirectBody | None:
    """The server's own way for the body once the start has gone through `send` (`DIRECT_BODY`),
    past the middleware, when it offers one. Every middleware of this app reads only a
    response's start (the status for the access log, CORS headers, Starlette's and FastAPI's
    "has it started" flags; `service.app` installs no other), and each of them wrapped every
    event's write in another coroutine call: ~6% of the CPU per token (issue #16)."""
    direct: DirectBody | None = scope.get("extensions", {}).get(DIRECT_BODY)
    return direct


async def _unstarted(message: Message) -> None:
    raise RuntimeError("the response has not been called")


# Why a stream was interrupted from outside its task (see the module docstring).
_Interruption = Literal["client_left", "shutdown", "send_timeout"]


class ChatStreamResponse(Response):
    """Streams `events` through `encoder`; see the module docstring for the phases."""

    media_type = "text/event-stream"  # the default format, for the OpenAPI document

    def __init__(
        self,
        events: ResponseBatches,
        encoder: Encoder,
        *,
        timing: StreamTiming,
        on_finish: Callable[[Delivery], None],
        on_heartbeat: Callable[[], None] | None = None,
        cut_off: CutOff | None = None,
        headers: Mapping[str, str] | None = None,
        render_error: ErrorRenderer = error_response,
        goes_on_elsewhere: bool = False,
    ) -> None:
        """`on_finish` is called once with how the response ended, `on_heartbeat` after each
        heartbeat sent; `cut_off`, when its grace runs out, ends the stream in-band as
        `server_shutting_down`, or, when the stream `goes_on_elsewhere` (a client following a
        resumable stream produced by another replica), ends the body with neither notice nor
        end marker, so that the client resumes it from another replica (an `EventSource` does
        so by itself); `render_error` gives an error before the first event its shape (the
        endpoint family's: `service.error_responses`)."""
        self._events = events
        # The events as a source that can push them, when they are one (`service.push`).
        self._pushable: PushSource[ResponseSink] | None = pushable(events)
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
        self._started = False  # the headers went out
        self._terminal_sent = False  # an end or error event went out
        self._closed = False  # the last message (more_body False) went out
        self._over = False  # nothing may interrupt the task any more
        self._running = False  # the stream's task has begun
        self._interruption: _Interruption | None = None
        self._task: asyncio.Task[Delivery] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Set when the response is called: it may be made outside the loop that runs it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._send: Send = _unstarted
        self._body_send: Send = _unstarted
        self._direct: DirectBody | None = None
        # A heartbeat being written; the stream's task writes nothing until it is done.
        self._beating: asyncio.Task[None] | None = None
        # While pushed: resolved with the last write (the terminal batch and the end marker);
        # kept in `_last_write` if an interruption came as it was resolved.
        self._pushed_end: asyncio.Future[bytes] | None = None
        self._last_write: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        delivery: Delivery = "internal_error"
        try:
            delivery = await self._respond(scope, receive, send)
        finally:
            self._on_finish(delivery)

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> Delivery:
        loop = self._loop = asyncio.get_running_loop()
        direct = self._direct = _direct_body(scope)
        self._send, self._body_send = send, direct.send if direct is not None else send
        self._last_write_at = loop.time()  # the first heartbeat is due from the start
        # The stream in a task of its own, not the request's: each suspension for a read or a
        # write passes every frame between the task and the read, and under the request's
        # task lie a score of middleware and routing frames (~5k instructions per token,
        # issue #16). Cancelling the request cancels it too. Made first: what interrupts it
        # (below) may do so at once.
        self._task = loop.create_task(self._run(scope, receive, send))
        listener = loop.create_task(_wait_for_disconnect(receive))
        listener.add_done_callback(self._listener_done)
        call_off = (
            self._cut_off.on_grace_expired(lambda: self._interrupt("shutdown"))
            if self._cut_off is not None
            else None
        )
        self._arm(loop.time())
        try:
            return await self._task
        finally:
            self._over = True
            listener.remove_done_callback(self._listener_done)
            listener.cancel()
            if call_off is not None:
                call_off()
            if self._timer is not None:
                self._timer.cancel()
            if self._beating is not None:
                self._beating.cancel()
            await self._events.aclose()

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> Delivery:
        self._running = True
        if self._interruption is not None:  # before the task began: nothing to cancel yet
            return await self._interrupted(self._interruption, scope, receive)
        try:
            try:
                batch = await anext(self._events)
            except Exception as failure:  # a stream without events (StopAsyncIteration) too
                if self._started:
                    raise  # after a heartbeat committed the headers: in-band, below
                logger.error("stream failed before its first event", exc_info=failure)
                await self._render_error(InternalError())(scope, receive, send)
                return "internal_error"
            await self._wait_for_heartbeat()
            if not self._started:
                opening = batch[0]
                if isinstance(opening, StreamFailed):
                    await self._render_error(opening.error)(scope, receive, send)
                    return "refused"
                await self._start()
            return await self._send_events(batch)
        except asyncio.CancelledError:
            reason = self._interruption
            task = self._task
            if reason is None or task is None or task.uncancel() > 0:
                raise  # cancelled from elsewhere: the request itself is being cancelled
            return await self._interrupted(reason, scope, receive)
        except OSError:  # the server reports the client gone
            return "client_left"
        except Exception as failure:
            logger.error("stream failed while sending", exc_info=failure)
            await self._end_in_band(InternalError())
            return "internal_error"

    async def _interrupted(self, reason: _Interruption, scope: Scope, receive: Receive) -> Delivery:
        if reason == "send_timeout":
            logger.warning(
                "client accepted no bytes for %ss; stream dropped", self._send_timeout_seconds
            )
            return "send_timeout"
        if reason == "shutdown":
            await self._wait_for_heartbeat()
            if not self._started:
                await self._render_error(server_shutting_down())(scope, receive, self._send)
                return "shutdown"
            # Short: uvicorn's own graceful timeout (grace + 5 s) must not cut the notice off.
            await self._end_in_band(
                server_shutting_down(),
                within=min(2.0, self._send_timeout_seconds),
                notice=not self._goes_on_elsewhere,
            )
            return "shutdown"
        return "client_left"

    async def _start(self) -> None:
        self._started = True
        await self._send(
            {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        )

    async def _send_events(self, batch: ResponseBatch) -> Delivery:
        send = self._body_send
        encoder = self._encoder
        encode = encoder.encode
        loop_time = asyncio.get_running_loop().time
        while True:
            # One write per batch: the events one upstream read brought (issue #16).
            body = encode(batch[0]) if len(batch) == 1 else b"".join(map(encode, batch))
            if self._beating is not None:  # a heartbeat is going out: after it
                await self._wait_for_heartbeat()
            if type(batch[-1]) in _TERMINAL:
                # Nothing follows a terminal event: the end marker goes in the same write.
                self._terminal_sent = True
                self._writing_since = loop_time()
                body += encoder.close()
                await send({"type": "http.response.body", "body": body, "more_body": False})
                self._closed, self._writing_since = True, None
                return "delivered"
            if body:
                self._writing_since = loop_time()
                await send({"type": "http.response.body", "body": body, "more_body": True})
                self._last_write_at, self._writing_since = loop_time(), None
            if self._direct is not None and self._pushable is not None:
                end = await self._pushed()
                if end is not None:
                    self._terminal_sent = True  # the terminal event goes in this last write
                    body = end
                    break
            try:
                batch = await anext(self._events)
            except StopAsyncIteration:
                body = encoder.close()
                break
        if self._beating is not None:
            await self._wait_for_heartbeat()
        self._writing_since = loop_time()
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self._closed, self._writing_since = True, None
        return "delivered"

    # -- pushed (`service.push`): the rest of the stream written from the upstream's callbacks --

    async def _pushed(self) -> bytes | None:
        """Have the rest of the stream pushed, and wait for its last write (returned); None,
        with nothing changed, when it cannot be (then read it)."""
        direct = self._direct
        events = self._pushable
        loop = self._loop
        assert direct is not None
        assert loop is not None
        if not direct.can_write() or events is None:
            self._direct = None
            return None
        end: asyncio.Future[bytes] = loop.create_future()
        self._pushed_end = end
        direct.when_writable(self._writable)
        try:
            if not events.push(self):
                self._direct = None
                return None
            return await end
        finally:
            self._pushed_end = None  # nothing more is written from the callbacks
            direct.when_writable(None)
            self._writing_since = None
            if end.done() and not end.cancelled() and end.exception() is None:
                # Interrupted (shutdown) as the terminal batch came: the end still goes out.
                self._last_write = end.result()

    def batch(self, batch: ResponseBatch) -> None:
        """A batch, from the upstream's socket callback (`service.push.ResponseSink`)."""
        end = self._pushed_end
        if end is None or end.done():
            return
        try:
            encoder = self._encoder
            encode = encoder.encode
            body = encode(batch[0]) if len(batch) == 1 else b"".join(map(encode, batch))
            if type(batch[-1]) in _TERMINAL:
                end.set_result(body + encoder.close())  # written by the stream's task
                return
            if body:
                assert self._loop is not None
                self._write_now(body, self._loop.time())
        except Exception as error:  # an OSError: the client is gone; else a bug
            end.set_exception(error)

    def _write_now(self, body: bytes, now: float) -> None:
        """Write `body` at once, while pushed; a client buffer found full pauses the upstream
        until it drains (`_writable`), and the send timeout counts from then. Raises the
        server's `OSError` once the client is gone."""
        direct = self._direct
        assert direct is not None
        if not direct.write(body) and self._writing_since is None:
            self._writing_since = now
            if self._pushable is not None:
                self._pushable.pause()
        self._last_write_at = now

    def failed(self, error: Exception) -> None:
        """Relaying broke (`service.push.ResponseSink`): ended as a failure when reading."""
        end = self._pushed_end
        if end is not None and not end.done():
            end.set_exception(error)

    def _writable(self) -> None:
        """The client's buffer drained: the upstream may go on."""
        if self._pushed_end is None or self._writing_since is None or self._loop is None:
            return
        self._writing_since = None
        self._last_write_at = self._loop.time()
        if self._pushable is not None:
            self._pushable.resume()

    # -- interruptions -----------------------------------------------------------------------

    def _interrupt(self, reason: _Interruption) -> None:
        """Stop the stream from outside its task, for `reason` (the first one counts)."""
        if self._over or self._interruption is not None or self._task is None:
            return
        self._interruption = reason
        if self._running:  # else `_run` sees the reason as it begins
            self._task.cancel()
        if self._beating is not None and reason == "send_timeout":
            self._beating.cancel()  # the stuck write may be the heartbeat's

    def _listener_done(self, listener: asyncio.Task[None]) -> None:
        if not listener.cancelled() and listener.exception() is None:
            self._interrupt("client_left")

    # -- the timer: heartbeats and the send timeout -------------------------------------------

    def _arm(self, now: float) -> None:
        """Wake up when a heartbeat may be due, or a write in progress may have stuck: never
        later than the send timeout, so a write that starts now and gets stuck is noticed
        within twice the timeout at most."""
        limit = self._send_timeout_seconds
        writing_since = self._writing_since
        if writing_since is not None:
            due = writing_since + limit
        elif self._encoder.heartbeat is None or self._beating is not None:
            due = now + min(limit, self._heartbeat_seconds)
        else:
            due = min(now + limit, self._last_write_at + self._heartbeat_seconds)
        assert self._loop is not None
        self._timer = self._loop.call_at(max(due, now + 0.01), self._tick)

    def _tick(self) -> None:
        self._timer = None
        loop = self._loop
        if self._over or self._closed or self._interruption is not None or loop is None:
            return
        now = loop.time()
        writing_since = self._writing_since
        if writing_since is not None and now - writing_since >= self._send_timeout_seconds:
            self._interrupt("send_timeout")
            return
        heartbeat = self._encoder.heartbeat
        idle = now - self._last_write_at >= self._heartbeat_seconds
        if heartbeat is not None and writing_since is None and self._beating is None and idle:
            if self._pushed_end is not None:
                self._beat_now(heartbeat, now)
            else:
                self._beating = asyncio.ensure_future(self._beat(heartbeat))
        self._arm(now)

    def _beat_now(self, heartbeat: bytes, now: float) -> None:
        """A heartbeat written at once, while pushed (nothing else writes now)."""
        try:
            self._write_now(heartbeat, now)
        except OSError:
            self._interrupt("client_left")
            return
        self._heartbeat_sent()

    async def _beat(self, heartbeat: bytes) -> None:
        """Write a heartbeat (the headers first, before the first event)."""
        loop = asyncio.get_running_loop()
        loop_time = loop.time
        try:
            self._writing_since = loop_time()
            if not self._started:
                await self._start()
            await self._body_send(
                {"type": "http.response.body", "body": heartbeat, "more_body": True}
            )
            self._last_write_at = loop_time()
            self._heartbeat_sent()
        except OSError:  # the server reports the client gone
            self._interrupt("client_left")
        finally:
            self._writing_since = None
            if self._beating is asyncio.current_task(loop):
                self._beating = None

    async def _wait_for_heartbeat(self) -> None:
        """Until a heartbeat being written is out (it may have committed the headers)."""
        beating = self._beating
        if beating is not None and not beating.done():
            await asyncio.wait((beating,))

    def _heartbeat_sent(self) -> None:
        if self._on_heartbeat is not None:
            self._on_heartbeat()

    async def _end_in_band(
        self, error: ServiceError, within: float | None = None, notice: bool = True
    ) -> None:
        """End a stream that was cut: the error event (unless a terminal event already went
        out) and the end marker (neither without `notice`), never anything after the end
        marker. Bounded by the send timeout, so a stalled client cannot hold the process."""
        if self._closed or not self._started:
            return
        body = b""
        if notice and self._last_write is not None:
            body = self._last_write  # the stream's own end, which was about to go out
        elif notice:
            body = b"" if self._terminal_sent else self._encoder.encode(StreamFailed(error))
            body += self._encoder.close()
        try:
            async with asyncio.timeout(within or self._send_timeout_seconds):
                await self._body_send(
                    {"type": "http.response.body", "body": body, "more_body": False}
                )
            self._closed = True
        except (TimeoutError, OSError):
            logger.warning("could not send the end of a cut stream; connection dropped")
