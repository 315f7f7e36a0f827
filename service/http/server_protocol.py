"""uvicorn's httptools protocol with the connection limits it lacks (issue #11).

uvicorn with httptools bounds neither the size of a request head nor the time a client may take
to send it or its body: 16 MB headers were accepted, ten 50 MB heads took 370 MB of memory, and
slowloris connections (1 byte/s, or nothing at all after connecting) stayed open for as long as
the client liked. And when an application gives up on a response it had started (the service
drops a client that stops reading), uvicorn closes the connection gracefully, which waits for
the unsent megabytes to drain: a client that never reads keeps its socket for ever.

`GuardedHttpToolsProtocol` adds, per connection:

- **Head size**: more than `max_head_bytes` before the end of the head is refused with 431 (414
  while the request line has not ended: the URL is what is too long). Counted on the bytes as
  they are read, before httptools buffers them, so memory stays bounded whatever the client
  sends. A chunked body's trailer is a head too (httptools buffers it as it does headers): the
  bytes of a body that are not body (chunk sizes, trailers) may not exceed `max_head_bytes`
  plus the body's own size.
- **Head time**: the head must be complete within `head_timeout_seconds` of the connection
  opening or of its first byte (an idle new connection counts), else 408.
- **Body time**: the body must be complete within `body_timeout_seconds` of the end of the head,
  else 408 (or, if the application has already answered, the connection is closed).
- **Aborting, not draining**: a response that the application started but did not complete is
  aborted (the socket is reset at once) instead of closed after its queued bytes drain.
- **JSON errors**: these refusals and uvicorn's own 400 for a request that is not HTTP carry the
  service's `{"error": {...}}` body instead of `text/plain`.
- **A direct way for bodies**: the `service.direct_body` extension in each request's scope
  (a `DirectBody`) hands the application the connection's own `send` (this protocol's, which
  still watches for the last message), so that a streamed body can skip the middleware once its
  start has passed through them, and a synchronous `write` of a part of a chunked body with
  a callback for when the client's buffer drains, so that a stream can be relayed from the
  upstream's socket callbacks (`service.push`, `service.http.stream_response`, issue #16).

A refusal is written, then the connection lingers for a moment, reading and dropping what the
client still sends: closing a socket with unread input resets it, and the reset can destroy the
refusal before the client reads it.

Why a protocol subclass: the limits must hold before the application sees a request (it sees
none until the head is complete), and uvicorn takes its HTTP protocol as a class
(`uvicorn.Config(http=...)`). The seams used are uvicorn's protocol interface
(`connection_made`, `data_received`, `connection_lost`, `resume_writing`), the httptools parser
callbacks it implements (`on_headers_complete`, `on_body`, `on_message_complete`),
`send_400_response`, `shutdown`, and the attributes `transport`, `flow` (its `write_paused`),
`cycle` (its `scope`, `send`, `response_started`, `response_complete`, `chunked_encoding` and
`disconnected`), `pipeline` and `server_state.default_headers`; nothing private (as read in
uvicorn 0.54). `python -m service` installs it; a plain
`uvicorn` command takes it as `--http service.asgi:http_protocol` (with the limits from the
environment). uvicorn's h11 protocol has a head size limit of its own
(`h11_max_incomplete_event_size`) but no timeouts.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from starlette.types import Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.errors import (
    InvalidRequest,
    RequestHeadTooLarge,
    RequestTimeout,
    ServiceError,
    URITooLong,
)
from service.wire.payloads import error_body

ASGIApp = Any  # uvicorn's ASGI3Application; its types module is private

# The server extension (in `scope["extensions"]`) offering a response's body a way past the
# application's middleware (issue #16): a `DirectBody`.
DIRECT_BODY = "service.direct_body"
# How long a refused connection keeps reading (and dropping) what the client still sends.
LINGER_SECONDS = 0.5


class DirectBody(Protocol):
    """A response body's way to the connection once its start has gone through the app."""

    # The server's own `send`, for any body message (the last one included).
    send: Send

    def can_write(self) -> bool:
        """Whether `write` may be used now: the response has started, with a chunked body
        (the stream responses' own), and has not ended."""
        ...

    def write(self, body: bytes) -> bool:
        """Write `body` (not empty, and not the body's last part: that goes through `send`)
        at once, without waiting. Returns False when the client's socket buffer is past its
        high-water mark: write nothing more before `when_writable` calls back. Raises
        `ConnectionResetError` once the client is gone."""
        ...

    def when_writable(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` each time the client's buffer has drained after `write` said it
        was full (None: stop)."""
        ...


class _CycleBody:
    """`DirectBody` for one request-response cycle of a `GuardedHttpToolsProtocol`."""

    __slots__ = ("_cycle", "_protocol", "send")

    def __init__(self, protocol: GuardedHttpToolsProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        # Replaced by the guarded app's tracking send (`_abort_if_incomplete`).
        self.send: Send = cycle.send  # type: ignore[assignment]  # uvicorn's narrower types

    def can_write(self) -> bool:
        cycle = self._cycle
        return (
            cycle.response_started
            and cycle.chunked_encoding is True
            and not cycle.response_complete
            and not cycle.disconnected
        )

    def write(self, body: bytes) -> bool:
        # What uvicorn's `send` does for a chunk of a chunked body, less the coroutine and the
        # wait for a drained buffer: the caller is told to wait instead.
        if self._cycle.disconnected:
            raise ConnectionResetError("the client is gone")
        protocol = self._protocol
        protocol.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return not protocol.flow.write_paused

    def when_writable(self, callback: Callable[[], None] | None) -> None:
        self._protocol.on_writable = callback


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_head_bytes: int
    head_timeout_seconds: float
    body_timeout_seconds: float


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring. Used through `guarded_protocol`, which sets `limits`."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = self._abort_if_incomplete(self.app)
        # Bytes of the head being received; None between the end of a head and the end of its
        # message (the body), when the head limit does not apply.
        self._head_bytes: int | None = 0
        self._request_line_ended = False
        self._heads_completed = 0
        # In the body: its bytes so far, and the bytes read that were not body (chunk framing,
        # trailers).
        self._body_bytes = self._framing_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False
        # Called when the client's buffer drains (`DirectBody.when_writable`).
        self.on_writable: Callable[[], None] | None = None

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        callback = self.on_writable
        if callback is not None:
            callback()

    def data_received(self, data: bytes) -> None:
        while data:
            if self._refused:
                return  # lingering: dropped
            if self.transport.is_closing():
                super().data_received(data)
                return
            if self._head_bytes is None:
                self._receive_body(data)
                return
            self._start_head_timer()
            room = self.limits.max_head_bytes - self._head_bytes
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._head_bytes += len(piece)
            if not self._request_line_ended and b"\n" in piece:
                self._request_line_ended = True
            heads_before = self._heads_completed
            super().data_received(piece)
            if data and self._heads_completed == heads_before and not self.transport.is_closing():
                self._refuse_oversized_head()
                return
            # The head ended within the limit: the rest is its body, or the next request.

    def _receive_body(self, data: bytes) -> None:
        body_before = self._body_bytes
        super().data_received(data)
        if self._head_bytes is not None or self._refused:
            return  # the message ended in this read: what followed is the next head
        self._framing_bytes += len(data) - (self._body_bytes - body_before)
        if self._framing_bytes > self.limits.max_head_bytes + self._body_bytes:
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()
            else:
                limit = self.limits.max_head_bytes
                self._refuse(
                    RequestHeadTooLarge(
                        f"the request's chunk framing and trailer exceed {limit} bytes"
                    )
                )

    # -- parser callbacks ------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._heads_completed += 1
        self._head_bytes = None
        self._body_bytes = self._framing_bytes = 0
        self._cancel_head_timer()
        self._body_timer = self.loop.call_later(
            self.limits.body_timeout_seconds, self._body_timed_out
        )
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # this request's (not an upgrade)
            scope: Any = self.scope  # uvicorn types extensions as dicts
            scope.setdefault("extensions", {})[DIRECT_BODY] = _CycleBody(self, cycle)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        self._request_line_ended = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self._refuse(InvalidRequest("the request is not valid HTTP/1.1", status_code=400))

    # -- limits ----------------------------------------------------------------------------

    def _refuse_oversized_head(self) -> None:
        limit = self.limits.max_head_bytes
        if self._request_line_ended:
            self._refuse(RequestHeadTooLarge(f"the request head exceeds {limit} bytes"))
        else:
            self._refuse(URITooLong(f"the request line (its URL) exceeds {limit} bytes"))

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.head_timeout_seconds, self._head_timed_out
            )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._response_in_progress():
            # Another request's response is still going out on this connection: let it
            # finish, then close instead of waiting for this head.
            self.shutdown()
            return
        seconds = self.limits.head_timeout_seconds
        self._refuse(RequestTimeout(f"the request head was not received within {seconds:g} s"))

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.pipeline:
            # This request waits behind another's response, unread: its time has not started.
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_timed_out
            )
        elif self.cycle is not None and not self.cycle.response_started:
            seconds = self.limits.body_timeout_seconds
            self._refuse(RequestTimeout(f"the request body was not received within {seconds:g} s"))
        else:
            self.transport.close()  # answered without the whole body: nothing more to read

    def _response_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse(self, error: ServiceError) -> None:
        """Answer `error` with `Connection: close`, then linger (see the module docstring)."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._cancel_timers()
        body = error_body(error.as_dict())
        status = http.HTTPStatus(error.status_code)
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        defaults = self.server_state.default_headers
        head += [name + b": " + value + b"\r\n" for name, value in defaults]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # -- responses -------------------------------------------------------------------------

    def _abort_if_incomplete(self, app: ASGIApp) -> ASGIApp:
        """`app`, with the connection reset when it leaves a started response incomplete."""

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            started = complete = False

            # A plain function returning `send`'s awaitable: no extra coroutine per message.
            def tracking_send(message: Any) -> Any:
                nonlocal started, complete
                if message["type"] == "http.response.start":
                    started = True
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    complete = True
                return send(message)

            # The response body may bypass the app's middleware once its start went through
            # them (`service.http.stream_response`): not this, which must see the last message.
            direct = scope.get("extensions", {}).get(DIRECT_BODY)
            if direct is not None:
                direct.send = tracking_send
            try:
                await app(scope, receive, tracking_send)
            finally:
                if started and not complete:
                    self.transport.abort()
                    # Let `connection_lost` mark the cycle disconnected before uvicorn looks
                    # at it, so it does not log "returned without completing response".
                    await asyncio.sleep(0)

        return guarded


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
