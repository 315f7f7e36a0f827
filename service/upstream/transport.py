"""The SDK's HTTP transport: HTTP/1.1 over asyncio, parsed by httptools (issue #16).

The SDK sends every request through it (`http_client=httpx2.AsyncClient(transport=...)`, the
documented way to choose the SDK's HTTP stack), so its auth, retries and status errors apply
unchanged. It is the service's own because of what a streamed answer costs per token: through
aiohttp (the SDK's alternative transport) each network read passed a dozen Python calls
(its protocol, parser callbacks, stream reader, flow control re-armed on every read, a read
timeout re-armed on every read) before the service saw the bytes; here it is the protocol's
`data_received`, httptools' C parser and one `on_body` callback, then one `read()` call
(`tests/`, bench/RESULTS.md: ~19k instructions per token less, ~0.6M per request).

What it does, and no more, since it talks to one kind of server (an OpenAI-compatible API):

- **Connections**: a pool per origin (scheme, host, port), at most `max_connections` in all
  (a request waits for one beyond that), kept alive for `keepalive_seconds` when idle, reused
  only when the previous response was read to its end and the server keeps the connection
  (`Connection: close` and HTTP/1.0 are honoured). A request whose reused connection turns out
  closed by the server before any answer is sent once more on a fresh connection: a stale
  keep-alive connection is no upstream failure.
- **TLS** for `https` (the system's trust store, or `SSL_CERT_FILE`, as httpx2 reads them), with
  the host name checked.
- **Timeouts** from httpx2's request extensions: `connect`; `read` for the wait for the head and
  for each read of a body read through httpx2 (`_Body`, error bodies and whole answers). Reads
  of a stream (`body_reader`) are not timed here: the service's deadline watch bounds those
  silences (`service.deadline`).
- **Bodies**: read (`body_reader`: one `read()` per network read), or handed over as they
  arrive (`body_source`'s `deliver`: the receiver is called from `data_received` itself, so a
  streamed answer is relayed without waking a task per token, `service.push`). Chunked,
  `Content-Length` or up to the end of the connection. Never decompressed
  (the service asks for `identity` and refuses anything else on its headers). At most
  `_BUFFERED_BYTES` wait unread before the socket stops being read, so a client that stops
  reading cannot make the service hold an upstream's whole answer.
- **Bounds**: a response head over `_MAX_HEAD_BYTES` is refused, informational (1xx) heads are
  skipped, redirects are never followed (httpx2 decides on them, and the service tells it not
  to).

Proxies from the environment (`HTTPS_PROXY`, ...) are served by httpx2's own transport, which
httpx2 mounts for them; a response from it has no `body_reader`, and is read through httpx2.

Exceptions are httpx2's, as the SDK expects of a transport (it retries a `TimeoutException` as
a timeout and any other as a connection error), each raised from the OS's own error, which
`service.upstream.openai_chat` reads to tell a timeout from a refusal.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import httptools
import httpx2

# At most this much of a response's body waits unread before the socket stops being read.
_BUFFERED_BYTES = 64 * 1024
# A response head (status line and headers) larger than this is refused.
_MAX_HEAD_BYTES = 64 * 1024

Origin = tuple[bytes, bytes, int]  # scheme, host, port


class BodyReceiver(Protocol):
    """Takes a response's body as it arrives (`BodySource.deliver`), called from the
    connection's `data_received`: must not raise, and must not wait."""

    def body_received(self, data: bytes) -> None:
        """The bytes of the body one network read brought (never empty)."""
        ...

    def body_ended(self, error: Exception | None) -> None:
        """The body is over: whole (None), or broken off (`httpx2.ReadError`, ...)."""
        ...


class BodySource(Protocol):
    """A response body of this transport's, read or handed over as it arrives."""

    async def read(self) -> bytes:
        """What arrived since the last read (waiting for something); `b""` at the end."""
        ...

    def deliver(self, receiver: BodyReceiver | None) -> None:
        """From now on, hand the body to `receiver` as it arrives, what arrived unread first
        (at once, in this call); None: keep it for `read` again."""
        ...

    def pause_reading(self) -> None:
        """Read nothing more from the socket until `resume_reading` (the receiver's consumer
        cannot take more now)."""
        ...

    def resume_reading(self) -> None: ...


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to the upstream, one exchange at a time. httptools calls the
    `on_*` methods from `data_received`."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[int] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        # Why the connection was given up, when it was this side's decision.
        self._refusal: str | None = None
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        # Who takes the body as it arrives, when it is delivered rather than read.
        self._receiver: BodyReceiver | None = None
        # Whether the body ends with the connection (no length, not chunked).
        self._until_close = False
        self.complete = False
        self._keep_alive = False
        self.received_any = False
        self.error: Exception | None = None
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            # A callback's own exception reaches here wrapped: the head's size is the one.
            reason = self._refusal or f"the upstream sent invalid HTTP: {error}"
            self._fail(httpx2.RemoteProtocolError(reason))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_close and self._head is not None and self._head.done():
            self.complete = True  # the end of such a body is the end of the connection
            self._wake()
            self._ended(None)
            return
        reason = exc or ConnectionResetError("the upstream closed the connection")
        error = httpx2.ReadError(str(reason) or type(reason).__name__)
        error.__cause__ = reason
        self._fail(error)

    def pause_writing(self) -> None:  # a request body is a few kilobytes: nothing waits
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > _MAX_HEAD_BYTES:
            self._refusal = f"the upstream's response head exceeds {_MAX_HEAD_BYTES} bytes"
            raise ValueError(self._refusal)  # stops the parser
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self.headers = []  # an informational answer (103 Early Hints): the real one follows
            self._head_bytes = 0
            return
        names = {name.lower() for name, _ in self.headers}
        chunked = any(
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in self.headers
        )
        self._until_close = not chunked and b"content-length" not in names
        assert self._head is not None
        if not self._head.done():
            self._head.set_result(status)

    def on_body(self, body: bytes) -> None:
        receiver = self._receiver
        if receiver is not None:  # delivered: the relay's whole work per token starts here
            receiver.body_received(body)
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _BUFFERED_BYTES:
            self.pause_reading()
        waiter = self._waiter  # `_wake`, inlined: once per token
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._head is None or not self._head.done():
            return  # the end of an informational answer
        self.complete = True
        # Asked here: httptools answers it only while the message is current.
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()
        self._ended(None)

    # -- the exchange ------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[int]:
        """Write `request`; the future holds the response's status once its head arrived."""
        assert self.transport is not None
        self._head = self.loop.create_future()
        self.headers, self._head_bytes = [], 0
        self.complete = self.received_any = self._keep_alive = False
        self._receiver = None
        self._body.clear()  # what the last exchange's reader left unread
        self._buffered = 0
        self.resume_reading()
        self.transport.write(request)
        return self._head

    async def read(self) -> bytes:
        """What arrived of the body since the last read, waiting for something; `b""` at its
        end. Raises `httpx2.ReadError` when the connection broke first."""
        body = self._body
        while not body:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            waiter = self._waiter = self.loop.create_future()
            await waiter
        return self._take_body()

    def deliver(self, receiver: BodyReceiver | None) -> None:
        self._receiver = receiver
        if receiver is None:
            return
        if self._body:
            receiver.body_received(self._take_body())
        if self._receiver is receiver and (self.complete or self.error is not None):
            self._ended(self.error if not self.complete else None)

    def _take_body(self) -> bytes:
        """All of the body that waits unread (not empty), and the socket read again if a full
        buffer had stopped it (the next read comes later, from the loop)."""
        body = self._body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        self.resume_reading()
        return data

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _ended(self, error: Exception | None) -> None:
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            receiver.body_ended(error)

    def head_timed_out(self) -> None:
        """The response head did not come in time: the wait for it fails, the connection is
        given up."""
        head = self._head
        if head is not None and not head.done():
            head.set_exception(httpx2.ReadTimeout("the upstream sent no response head in time"))
            self.close()

    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and not self._until_close
            and self.error is None
            and self._keep_alive
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        if self.complete:
            return
        self.error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()
        self._ended(error)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class _Pool:
    """Idle connections per origin, and a bound on connections in all: a request that finds
    neither an idle connection nor room for a new one waits until a connection is released."""

    def __init__(self, max_connections: int, keepalive_seconds: float) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._keepalive_seconds = keepalive_seconds
        self._max = max_connections
        # Connections made (or being made) and not closed yet, idle ones included.
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def checkout(self, origin: Origin) -> _Connection | None:
        """An idle connection to `origin`, or None with room kept for the caller to make a new
        one (`give_back` if that fails)."""
        while True:
            connection = self._take_idle(origin)
            if connection is not None:
                return connection
            if self._open < self._max or self._close_one_idle():
                self._open += 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif not waiter.cancelled():
                    self._wake_one()  # it had been woken: the next one gets the chance
                raise

    def give_back(self) -> None:
        """The room of a connection that could not be made."""
        self._open -= 1
        self._wake_one()

    def release(self, connection: _Connection) -> None:
        """`connection`'s exchange is over: kept for the next, or closed."""
        if connection.reusable():
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
        else:
            self._closed(connection)
        self._wake_one()

    def _take_idle(self, origin: Origin) -> _Connection | None:
        """The most recently used idle connection to `origin` still usable, if any."""
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            transport = connection.transport
            fresh = now - connection.idle_since < self._keepalive_seconds
            if fresh and not connection.closed and transport and not transport.is_closing():
                return connection
            self._closed(connection)
        return None

    def _close_one_idle(self) -> bool:
        """Make room by closing an idle connection (to another origin: none to this one is)."""
        for connections in self._idle.values():
            if connections:
                self._closed(connections.pop(0))
                return True
        return False

    def _closed(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


# The keys of a response's connection, and of its body, in its `extensions`.
_CONNECTION = "service.connection"
_BODY = "service.body"


def body_reader(response: httpx2.Response) -> Callable[[], Awaitable[bytes]] | None:
    """The body's `read()` (`b""` at the end) of a response this transport produced; None for
    any other (served by httpx2's own transport)."""
    source = body_source(response)
    return source.read if source is not None else None


def body_source(response: httpx2.Response) -> BodySource | None:
    """The body of a response this transport produced, to read or to have delivered; None for
    any other (served by httpx2's own transport). Closing the response still ends the
    exchange."""
    connection = response.extensions.get(_CONNECTION)
    return connection if isinstance(connection, _Connection) else None


def discard(response: httpx2.Response) -> None:
    """End the exchange of a response that will not be closed (its owner was dropped): its
    connection is closed, and its place in the pool given back."""
    body = response.extensions.get(_BODY)
    if isinstance(body, _Body):
        body.discard()


def release_when_complete(response: httpx2.Response, seconds: float) -> bool:
    """End the exchange of a response whose body's content is over (an answer's `[DONE]`) once
    the rest of it has arrived (normally just the end of a chunked body), so that its
    connection goes back to the pool, without waiting for it here; past `seconds` the
    connection is closed instead. False for a response this transport did not produce."""
    body = response.extensions.get(_BODY)
    if not isinstance(body, _Body):
        return False
    body.release_when_complete(seconds)
    return True


class HTTP1Transport(httpx2.AsyncBaseTransport):
    """httpx2 requests sent over the service's own HTTP/1.1 connections (module docstring)."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._pool: _Pool | None = None
        self._tls: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeout = request.extensions.get("timeout", {})
        url = request.url
        origin: Origin = (url.raw_scheme, url.raw_host, url.port or _DEFAULT_PORTS[url.scheme])
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head += [name + b": " + value + b"\r\n" for name, value in request.headers.raw]
        head.append(b"\r\n")
        message = b"".join(head) + await request.aread()
        pool = self._pool or self._make_pool()
        while True:
            connection = await pool.checkout(origin)
            reused = connection is not None
            if connection is None:
                try:
                    connection = await self._connect(origin, timeout.get("connect"))
                except BaseException:
                    pool.give_back()
                    raise
            try:
                status = await self._exchange(connection, message, timeout.get("read"))
            except httpx2.ReadError:
                pool.release(connection)
                if reused and not connection.received_any:
                    continue  # closed by the server while idle: once more (bounded by the idle)
                raise
            except BaseException:
                pool.release(connection)
                raise
            break
        body = _Body(pool, connection, timeout.get("read"))
        return httpx2.Response(
            status_code=status,
            headers=connection.headers,
            stream=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1", _CONNECTION: connection, _BODY: body},
        )

    async def _exchange(
        self, connection: _Connection, message: bytes, read_timeout: float | None
    ) -> int:
        head = connection.send(message)
        if read_timeout is None:
            return await head
        # A timer that fails the wait, rather than `asyncio.timeout` around it, which cancels
        # and takes back a cancellation: a third of its cost, once per request (issue #16).
        timer = connection.loop.call_later(read_timeout, connection.head_timed_out)
        try:
            return await head
        finally:
            timer.cancel()

    async def _connect(self, origin: Origin, connect_timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = self._tls_context() if scheme == b"https" else None
        name = host.decode("ascii")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin),
                    name,
                    port,
                    ssl=tls,
                    server_hostname=name if tls is not None else None,
                )
        except TimeoutError as error:
            raise httpx2.ConnectTimeout("connecting to the upstream timed out") from error
        except OSError as error:
            raise httpx2.ConnectError(str(error) or type(error).__name__) from error
        return connection

    def _make_pool(self) -> _Pool:
        # Made on first use: its semaphore belongs to the running event loop.
        self._pool = _Pool(self._max_connections, self._keepalive_seconds)
        return self._pool

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = httpx2.create_ssl_context()
        return self._tls

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()


_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Body(httpx2.AsyncByteStream):
    """The body for httpx2's own readers (`aread`, `aiter_raw`: error bodies, whole answers),
    each read bounded by the read timeout; closing it ends the exchange (the connection back
    to the pool when the body was read to its end, closed otherwise)."""

    def __init__(self, pool: _Pool, connection: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self._connection.read
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await read()
            except TimeoutError as error:
                raise httpx2.ReadTimeout("the upstream's body stalled") from error
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        self.discard()

    def discard(self) -> None:
        if not self._released:
            self._released = True
            self._connection.deliver(None)
            self._pool.release(self._connection)

    def release_when_complete(self, seconds: float) -> None:
        connection = self._connection
        if self._released or connection.complete or connection.error is not None:
            self.discard()
            return
        self._released = True  # from now on, by the drainer
        connection.deliver(_Drainer(self._pool, connection, seconds))


class _Drainer:
    """Receives (and drops) what is left of a body, then gives its connection back to the pool
    (`release_when_complete`); closes it if the rest takes longer than `seconds`."""

    def __init__(self, pool: _Pool, connection: _Connection, seconds: float) -> None:
        self._pool = pool
        self._connection = connection
        self._timer: asyncio.TimerHandle | None = connection.loop.call_later(seconds, self._expired)

    def body_received(self, data: bytes) -> None:
        pass

    def body_ended(self, error: Exception | None) -> None:
        self._release()

    def _expired(self) -> None:
        self._timer = None
        self._connection.deliver(None)
        self._connection.close()  # not reusable: released closed
        self._release()

    def _release(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._pool.release(self._connection)
