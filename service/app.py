"""The application factory: settings in, a ready FastAPI app out (tests build apps this way)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service.auth import APIKeys
from service.chat import ChatService
from service.errors import InvalidRequest, ServiceError
from service.http.access_log import AccessLog
from service.http.stream_response import error_response
from service.limits import StreamLimits
from service.routes import router
from service.schemas import describe_problems
from service.settings import Settings
from service.shutdown import ShutdownCoordinator
from service.upstream.base import ChatUpstream
from service.wire.payloads import error_body

logger = logging.getLogger("service")


def build_upstream(settings: Settings) -> ChatUpstream:
    if settings.provider == "demo":
        from service.upstream.demo import DemoUpstream

        return DemoUpstream(
            tokens_per_second=settings.demo_tokens_per_second,
            first_token_delay_seconds=settings.demo_first_token_delay_seconds,
        )
    from service.upstream.openai_chat import OpenAIChatUpstream

    return OpenAIChatUpstream(settings)


def create_app(settings: Settings | None = None, upstream: ChatUpstream | None = None) -> FastAPI:
    """Build the app. `settings` default to the environment; `upstream` to the configured one."""
    resolved = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = upstream if upstream is not None else build_upstream(resolved)
        app.state.chat = ChatService(resolved, chosen)
        app.state.shutdown.attach(asyncio.get_running_loop())
        if chosen.provider == "demo":
            logger.warning(
                "no upstream configured (OPENAI_API_KEY, OPENAI_BASE_URL or AZURE_OPENAI_*): "
                "answering with the embedded demo model"
            )
        else:
            logger.info("streaming from %s, default model %s", chosen.provider, resolved.model_name)
        try:
            yield
        finally:
            await chosen.aclose()

    docs = resolved.serve_docs
    app = FastAPI(
        title="LLM chat streaming service",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.api_keys = APIKeys(resolved.api_keys)
    app.state.stream_limits = StreamLimits(
        per_process=resolved.max_concurrent_streams, per_key=resolved.max_streams_per_key
    )
    app.state.shutdown = ShutdownCoordinator(resolved.shutdown_grace_seconds)
    if resolved.cors_origins:
        # Starlette's CORS middleware is plain ASGI: streaming and disconnects pass through.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(resolved.cors_origins),
            allow_credentials=resolved.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", "Last-Event-ID"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    # Outermost of the service's middleware, so its duration covers them (issue #11).
    app.add_middleware(AccessLog)
    app.include_router(router)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_left)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(InvalidRequest(describe_problems(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return Response(
        error_body({"type": kind, "message": str(exc.detail)}),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


async def _client_left(request: Request, exc: Exception) -> Response:
    """The client went away while sending its body: nobody to answer, nothing to alarm about."""
    logger.info("client disconnected before its request body was complete")
    return Response(status_code=400)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    logger.error("unhandled error", exc_info=exc)
    return Response(
        error_body({"type": "internal_error", "message": "internal server error"}),
        status_code=500,
        media_type="application/json",
    )
