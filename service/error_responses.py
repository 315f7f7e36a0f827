"""Every error body the service answers with, rendered in one place.

Two shapes, chosen by endpoint family (`renderer_for`, from the request's path):

- the service's own, `{"error": {"type", "message", "retryable"[, "retry_after_seconds"]}}`;
- OpenAI's, `{"error": {"message", "type", "param", "code"}}`, under `/v1/` (issue #8): the
  OpenAI SDKs turn it into `BadRequestError`, `RateLimitError`, ... by status, and obey an
  `x-should-retry` header, which says whether the error is worth their automatic retry.

Either shape covers every status: the service's own `ServiceError`s, validation problems (422),
routing's 404 and 405, a client that left mid-body, and an unhandled exception (500, whose
details go to the log only). `Retry-After` (and `Allow`, `WWW-Authenticate`) go with both.

Unhandled exceptions are caught by `CatchUnhandled`, a pure ASGI middleware just inside the CORS
middleware (so a 500 still carries CORS headers), which logs them once through the service's JSON
logger and does not re-raise. A handler registered for `Exception` would instead run inside
Starlette's `ServerErrorMiddleware`, which re-raises after it, so uvicorn logged the same
traceback a second time in plain text (issue #7).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import InternalError, InvalidRequest, RouteError, ServiceError
from service.schemas import describe_problems
from service.wire.payloads import error_body

logger = logging.getLogger("service.errors")


ErrorRenderer = Callable[[ServiceError], Response]
# The endpoint family that answers in OpenAI's shape (`service.openai_routes`).
OPENAI_PREFIX = "/v1"


def error_response(error: ServiceError) -> Response:
    """The HTTP response for `error` in the service's shape: its status, its headers
    (`Retry-After`, `Allow`, `WWW-Authenticate`), and the JSON body."""
    return Response(
        error_body(error.as_dict()),
        status_code=error.status_code,
        headers=error.headers(),
        media_type="application/json",
    )


def openai_error_response(error: ServiceError) -> Response:
    """The HTTP response for `error` in OpenAI's shape, with the status OpenAI would answer."""
    return Response(
        error_body(error.as_openai_dict()),
        status_code=error.openai_status,
        # https://github.com/openai/openai-python/blob/main/src/openai/_base_client.py
        # (`_should_retry`): the SDKs retry 5xx by default, which is useless for a 501.
        headers={**error.headers(), "x-should-retry": "true" if error.retryable else "false"},
        media_type="application/json",
    )


def renderer_for(path: str) -> ErrorRenderer:
    """The shape of errors for a request path: OpenAI's under `/v1/`, else the service's."""
    if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
        return openai_error_response
    return error_response


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return renderer_for(request.scope["path"])(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return renderer_for(request.scope["path"])(InvalidRequest(describe_problems(exc.errors())))


async def _route_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return renderer_for(request.scope["path"])(
        RouteError(str(exc.detail), status_code=exc.status_code, headers=dict(exc.headers or {}))
    )


async def _client_left(request: Request, exc: Exception) -> Response:
    """The client went away while sending its body: nobody to answer, nothing to alarm about."""
    logger.info("client disconnected before its request body was complete")
    return Response(status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _route_error)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_middleware(CatchUnhandled)


class CatchUnhandled:
    """Turns an exception that escaped every handler into one JSON log record and, if no
    response has started, a 500 JSON error. Never re-raised: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # `send` is not wrapped to learn whether the response started: that would add a call
        # to every token's write. A start after one has gone out is refused by the server.
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            if scope["type"] != "http":
                raise
            logger.error(
                "unhandled error in %s %s", scope.get("method"), scope.get("path"), exc_info=error
            )
            # Refused when the response had started (or the client is gone): nothing more to say.
            with contextlib.suppress(RuntimeError, OSError):
                render = renderer_for(scope.get("path", ""))
                await render(InternalError())(scope, receive, send)
