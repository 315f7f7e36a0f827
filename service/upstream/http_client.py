"""The SDK's HTTP client: httpx2's, less the work per request for what the service never uses.

The SDK builds each request with its client's `build_request` and sends it with `send` (both
public httpx2 API, and the SDK's documented `http_client` seam). httpx2's versions merge the
client's base URL, headers, cookies and query parameters into each request, then send it through
the auth flow, the redirect loop, cookie extraction, a timing wrapper and a log line whose
arguments are formatted even when the log is off: a sixth of what the SDK's `post` costs per
request (~40 µs in process, issue #16, bench/RESULTS.md). The service's client has no base URL,
cookies, query parameters or auth of its own (the SDK puts the key in the headers), and never
follows a redirect, so `ServiceHTTPClient` does just what remains, and hands anything else
(another caller's form data, an auth flow) to httpx2's own methods:

- `build_request`: the client's default headers, overridden by the request's (by name, as
  `Headers.update` does), the timeout as the transport's `timeout` extension, and the URL
  parsed once (an `httpx2.URL` is immutable; the SDK sends the same few). For a body in memory
  (the SDK's JSON) it also writes the `Host` and `Content-Length` httpx2 would work out, where
  httpx2 would build the head three times over to add them (~6% of the instructions of a
  request, issue #16); a request whose headers or client's defaults name either, or
  `Transfer-Encoding`, or with an empty body or a URL without a host, gets httpx2's own;
- `send`: the request hooks, the transport, the response hooks; the body read when not streamed
  (a request with an auth flow goes through httpx2's, and so does one to a URL with
  `user:password@`, which the SDK keeps from its base URL and httpx2 turns into Basic auth).

Cookies an upstream sets are not kept: one user's upstream cookie must not ride on another's
request. A response's `elapsed` is not measured (nothing reads it). With a proxy in the
environment (`HTTPS_PROXY`, ...) httpx2 mounts a proxy transport for it, which this client's
`send` would skip: `build_client` then takes httpx2's own client (`needs_httpx_client`).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import httpx2
from httpx2 import USE_CLIENT_DEFAULT

# At most this many parsed URLs are kept (a URL with a query string would make each new).
_URLS_KEPT = 64
# Headers httpx2 works out from the URL and the body; a request that sets one itself goes
# through httpx2's own `Request`, which decides between the two.
_SET_BY_HTTPX = frozenset((b"host", b"content-length", b"transfer-encoding"))


def needs_httpx_client() -> bool:
    """Whether the environment (or the system, where it has settings) names a proxy, as httpx2
    reads it with `trust_env`."""
    proxies = urllib.request.getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "all"))


class ServiceHTTPClient(httpx2.AsyncClient):
    """httpx2's async client with a shorter way for the SDK's requests (module docstring)."""

    def __init__(self, *, transport: httpx2.AsyncBaseTransport, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self._service_transport = transport
        # The client's default headers, raw, and its timeout as the transport reads it.
        self._default_headers = list(self.headers.raw)
        self._default_timeout = self.timeout.as_dict()
        self._defaults_set_by_httpx = any(
            name.lower() in _SET_BY_HTTPX for name, _ in self._default_headers
        )
        # The URLs requests went to, parsed (a few: the deployments' endpoints).
        self._urls: dict[str, httpx2.URL] = {}

    def build_request(
        self,
        method: str,
        url: httpx2.URL | str,
        *,
        content: Any = None,
        data: Any = None,
        files: Any = None,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
        cookies: Any = None,
        timeout: Any = USE_CLIENT_DEFAULT,
        extensions: Any = None,
    ) -> httpx2.Request:
        if (
            data is not None
            or files
            or json is not None
            or params
            or cookies
            or extensions
            or not isinstance(headers, list)
            or self.base_url.raw_path != b"/"
        ):
            return super().build_request(
                method,
                url,
                content=content,
                data=data,
                files=files,
                json=json,
                params=params,
                headers=headers,
                cookies=cookies,
                timeout=timeout,
                extensions=extensions,
            )
        given = [
            (
                name.encode("ascii") if isinstance(name, str) else name,
                value.encode() if isinstance(value, str) else value,
            )
            for name, value in headers
        ]
        overridden = {name.lower() for name, _ in given}
        merged = [item for item in self._default_headers if item[0].lower() not in overridden]
        if timeout is USE_CLIENT_DEFAULT:
            timeouts = self._default_timeout
        else:
            timeouts = httpx2.Timeout(timeout).as_dict()
        if isinstance(url, str):
            parsed = self._urls.get(url)
            if parsed is None:
                if len(self._urls) >= _URLS_KEPT:
                    self._urls.clear()
                parsed = self._urls[url] = httpx2.URL(url)
            url = parsed
        extensions = {"timeout": timeouts}
        if (
            not isinstance(content, bytes)
            or not content
            or not url.host  # httpx2 names no `Host` then
            or overridden & _SET_BY_HTTPX
            or self._defaults_set_by_httpx
        ):
            return httpx2.Request(
                method, url, content=content, headers=merged + given, extensions=extensions
            )
        # The head httpx2 gives `content=`: `Host` first, `Content-Length` last (its
        # `Request._prepare`), here without its three passes over the headers.
        head = [(b"Host", url.netloc), *merged, *given, (b"Content-Length", b"%d" % len(content))]
        request = httpx2.Request(
            method, url, headers=head, stream=httpx2.ByteStream(content), extensions=extensions
        )
        request.read()  # as httpx2 does for a body in memory: `request.content` is readable
        return request

    async def send(
        self,
        request: httpx2.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: Any = USE_CLIENT_DEFAULT,
    ) -> httpx2.Response:
        if (auth is not USE_CLIENT_DEFAULT and auth is not None) or request.url.userinfo:
            return await super().send(request, stream=stream, auth=auth)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        hooks = self.event_hooks
        for hook in hooks["request"]:
            await hook(request)
        response = await self._service_transport.handle_async_request(request)
        response.request = request
        try:
            for hook in hooks["response"]:
                await hook(response)
            if not stream:
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response
