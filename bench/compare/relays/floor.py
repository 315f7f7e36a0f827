"""The floor: a raw byte-forwarding relay, the least any Python relay can do per token.

    uvicorn bench.compare.relays.floor:app   (UPSTREAM_BASE_URL=http://127.0.0.1:PORT)

A bare ASGI app on aiohttp: the request body goes upstream unchanged, and every read of the
upstream body is sent on as it is (no parsing, no validation, no logging). It still does the
one thing no relay may skip: when the client leaves, the upstream request is closed at once
(uvicorn's `send` just returns after a disconnect, so a watcher on `receive` notices it).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

Scope = dict[str, Any]
Message = dict[str, Any]

_session: aiohttp.ClientSession | None = None


async def _lifespan(receive: Any, send: Any) -> None:
    global _session
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # limit=0: no cap on connections to the upstream (the default 100 would queue).
            _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if _session is not None:
                await _session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        piece: bytes = message.get("body", b"")
        body += piece
        if not message.get("more_body"):
            return body


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _forward(upstream: aiohttp.ClientResponse, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": upstream.status,
            "headers": [(b"content-type", upstream.headers["content-type"].encode())],
        }
    )
    async for data in upstream.content.iter_any():
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    assert _session is not None
    body = await _read_body(receive)
    url = os.environ["UPSTREAM_BASE_URL"] + "/v1/chat/completions"
    async with _session.post(
        url, data=body, headers={"content-type": "application/json"}
    ) as upstream:
        forward = asyncio.ensure_future(_forward(upstream, send))
        left = asyncio.ensure_future(_until_disconnect(receive))
        await asyncio.wait((forward, left), return_when=asyncio.FIRST_COMPLETED)
        for task in (forward, left):
            task.cancel()
        if left.done() and not left.cancelled():
            upstream.close()  # the client left: drop the upstream connection now
        await asyncio.gather(forward, left, return_exceptions=True)
