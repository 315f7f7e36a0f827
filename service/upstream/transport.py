"""The SDK's HTTP transport: httpx2's transport interface over one aiohttp session, with the
body's reader handed to the upstream module directly (issue #16).

The SDK sends every request through it (`http_client=httpx2.AsyncClient(transport=...)`, the
documented way to choose the SDK's HTTP stack), so its auth, retries and status errors apply
unchanged. What differs from the SDK's own aiohttp adapter (`DefaultAioHttpClient`) is the body:
the response carries aiohttp's `StreamReader` in its extensions (`body_reader`), and a streamed
answer is read from it, one `readany()` per network read. Through httpx2's `aiter_raw()` each
read passed three more async generators (the adapter's stream, httpx2's bound stream and
`aiter_raw` itself) and their suspensions, once per token. `aiter_raw()` still works (the SDK
reads error bodies through it), and a response that came another way (`UPSTREAM_HTTP_CLIENT=
httpx2`, or a proxy from the environment, which httpx2 serves itself) has no reader: the
upstream module falls back to `aiter_raw()` then.

Exceptions are translated here into httpx2's, as the SDK expects of a transport (it retries a
`TimeoutException` as a timeout and any other as a connection error): an aiohttp timeout becomes
a timeout, a connection that could not be made or broke off a network error. Reads from the
body's reader raise aiohttp's own exceptions; `service.upstream.openai_chat` translates those.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx2
from yarl import URL

# The key of the aiohttp `StreamReader` in a response's `extensions`.
BODY_READER = "service.body_reader"
# One read of a body that is read whole (an error, a model list): aiohttp's buffer size.
_READ_SIZE = 64 * 1024


def body_reader(response: httpx2.Response) -> aiohttp.StreamReader | None:
    """The reader of a response this transport produced; None for any other."""
    reader = response.extensions.get(BODY_READER)
    return reader if isinstance(reader, aiohttp.StreamReader) else None


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2 requests sent by aiohttp. Redirects are never followed (httpx2 decides on them,
    and the service tells it not to) and bodies are never decompressed (the service asks for
    `identity` and refuses anything else on its headers)."""

    def __init__(self, *, max_connections: int, keepalive_seconds: float) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=self._keepalive_seconds
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # an API client keeps no cookies
                auto_decompress=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeout = request.extensions.get("timeout", {})
        read_timeout: float | None = timeout.get("read")
        try:
            # The read timeout bounds the wait for the head here, and each read of the body
            # through httpx2 (`_Body`); not the reads from `body_reader`, which aiohttp would
            # time with a timer re-armed per read: a stream's silences are bounded by the
            # service's own deadline watch instead (`service.deadline`).
            async with asyncio.timeout(read_timeout):
                response = await self._client().request(
                    request.method,
                    URL(str(request.url), encoded=True),  # httpx2 encoded it already
                    headers=request.headers.multi_items(),
                    data=await request.aread() or None,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        sock_connect=timeout.get("connect"), connect=timeout.get("pool")
                    ),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _translated(error) from error
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, read_timeout),
            request=request,
            extensions={"http_version": b"HTTP/1.1", BODY_READER: response.content},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Body(httpx2.AsyncByteStream):
    """The body for httpx2's own readers (`aread`, `aiter_raw`: error bodies, whole answers),
    each read bounded by the read timeout; closing it releases the connection (back to the
    pool once the body was read to its end, closed otherwise)."""

    def __init__(self, response: aiohttp.ClientResponse, read_timeout: float | None) -> None:
        self._response = response
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self._response.content.read
        try:
            while True:
                async with asyncio.timeout(self._read_timeout):
                    chunk = await read(_READ_SIZE)
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as error:
            raise _translated(error) from error

    async def aclose(self) -> None:
        self._response.release()


def _translated(error: aiohttp.ClientError | TimeoutError) -> httpx2.TransportError:
    message = str(error) or type(error).__name__
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(message)
    if isinstance(error, TimeoutError):  # the head, or a read, took too long
        return httpx2.ReadTimeout(message)
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(message)
    return httpx2.ReadError(message)
