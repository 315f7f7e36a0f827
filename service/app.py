"""The application factory: settings in, a ready FastAPI app out (tests build apps this way)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware

from service import openai_routes, routes, ui_chat
from service.auth import APIKeys
from service.chat import ChatService
from service.error_responses import install_error_handlers
from service.http.access_log import AccessLog
from service.http.stream_response import STREAM_ID_HEADER
from service.limits import StreamLimits
from service.runtime import Runtime, runtime_of
from service.settings import Settings
from service.shutdown import ShutdownCoordinator
from service.upstream.base import ChatUpstream
from service.upstream.providers import build_upstream

logger = logging.getLogger("service")

# Every endpoint family: adding one is a module with an `APIRouter` plus one entry here.
ROUTERS = (routes.router, ui_chat.router, openai_routes.router)


def create_app(settings: Settings | None = None, upstream: ChatUpstream | None = None) -> FastAPI:
    """Build the app. `settings` default to the environment; `upstream` to the configured
    provider's (`service.upstream.providers`)."""
    resolved = settings if settings is not None else Settings()
    chosen = upstream if upstream is not None else build_upstream(resolved)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = runtime_of(app)
        runtime.shutdown.attach(asyncio.get_running_loop())
        level, notice = chosen.startup_notice()
        logger.log(level, notice)
        if runtime.resume is not None:
            await runtime.resume.start()
        try:
            yield
        finally:
            if runtime.resume is not None:
                await runtime.resume.aclose()
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
    shutdown = ShutdownCoordinator(resolved.shutdown_grace_seconds)
    routers: tuple[APIRouter, ...] = ROUTERS
    resume = None
    if resolved.redis_url is not None:
        # Resumable streams (issue #13): redis is imported only when configured.
        from service.resume import routes as resume_routes
        from service.resume.hub import ResumableStreams

        resume = ResumableStreams(resolved, shutdown)
        routers += (resume_routes.router,)
    app.state.runtime = Runtime(
        settings=resolved,
        chat=ChatService(resolved, chosen),
        api_keys=APIKeys(resolved.api_keys),
        stream_limits=StreamLimits(
            per_process=resolved.max_concurrent_streams, per_key=resolved.max_streams_per_key
        ),
        shutdown=shutdown,
        resume=resume,
    )
    for router in routers:
        app.include_router(router)
    # Middleware added later wraps what was added before: errors are rendered inside CORS, so
    # a 500 carries the CORS headers too.
    install_error_handlers(app)
    if resolved.cors_origins:
        # Starlette's CORS middleware is plain ASGI: streaming and disconnects pass through.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(resolved.cors_origins),
            allow_credentials=resolved.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            # Any request header: the OpenAI JS SDK sends its own `x-stainless-*` headers, and
            # the origins, not the headers, are what keeps other sites out.
            allow_headers=["*"],
            # X-Stream-Id: the id to resume a stream with.
            expose_headers=["Retry-After", "x-should-retry", STREAM_ID_HEADER],
            max_age=600,
        )
    # Outermost of the service's middleware, so it sees the status of every response (the
    # 500 of an unhandled error included) and its duration covers them (issue #11).
    app.add_middleware(AccessLog)
    return app
