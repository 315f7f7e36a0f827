"""The access log: one JSON line per request (logger `service.access`), never its query string.

uvicorn's access log writes the URL as received, and the query can carry what must not be
logged: an EventSource client's prompt (`?message=...`), or a key someone put in the URL
(issue #11). The service logs requests itself instead (uvicorn's is turned off in
`service.server`):

    {"message":"request","method":"GET","path":"/api/chat/stream","status":200,
     "duration_ms":1577.0,"stream_id":"chat-..."}

`path` is the ASGI `path` (no query string), `status` the status the service sent (null if the
client left before any), `duration_ms` runs to the end of the response (the end of the stream),
and `stream_id` ties a chat request to its stream summary (`service.metrics`); the stream's
opening sets it as `request.state.stream_id` (`service.streaming`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("service.access")


class AccessLog:
    """Pure ASGI middleware (streaming and disconnects pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        status: int | None = None

        # A plain function returning `send`'s awaitable: no extra coroutine per streamed event.
        def send_and_note_status(message: Message) -> Any:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "stream_id": state.get("stream_id"),
            }
            logger.info("request", extra={"fields": fields})
