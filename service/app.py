"""The application factory: settings in, a ready FastAPI app out (tests build apps this way)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware

from service import metrics_routes, openai_routes, routes, ui_chat
from service.auth import APIKeys
from service.chat import ChatService
from service.deployment_metrics import DeploymentMetrics
from service.error_responses import install_error_handlers
from service.http.access_log import AccessLog
from service.http.request_route import refuse_hidden_dependencies
from service.http.stream_response import STREAM_ID_HEADER
from service.limits import StreamLimits
from service.prometheus_metrics import PrometheusMetrics
from service.runtime import Runtime, runtime_of
from service.settings import Settings
from service.shutdown import ShutdownCoordinator
from service.upstream.base import ChatUpstream
from service.upstream.providers import build_upstream

if TYPE_CHECKING:
    from service.traces import StreamSpans

logger = logging.getLogger("service")

# Every endpoint family: adding one is a module with an `APIRouter` plus one entry here.
ROUTERS = (routes.router, ui_chat.router, openai_routes.router, metrics_routes.router)


def stream_spans(settings: Settings) -> StreamSpans | None:
    """Traces, when `OTEL_EXPORTER_OTLP_ENDPOINT` asks for them (`service.traces`)."""
    if settings.otel_exporter_otlp_endpoint is None:
        return None
    from service.traces import StreamSpans  # the SDK is loaded only when traces are wanted

    return StreamSpans(settings.otel_exporter_otlp_endpoint)


def create_app(
    settings: Settings | None = None,
    upstream: ChatUpstream | None = None,
    *,
    drain_on_signals: bool = False,
    freeze_after_startup: bool = False,
) -> FastAPI:
    """Build the app. `settings` default to the environment; `upstream` to the configured
    provider's (`service.upstream.providers`). With `drain_on_signals` (what `python -m
    service` serves), SIGTERM and SIGINT start the graceful drain (`service.shutdown`). With
    `freeze_after_startup` (`python -m service` too), everything alive once the app has started
    is moved out of the garbage collector's sight (`gc.freeze`): the first full collections
    under load otherwise walk the hundreds of thousands of objects of FastAPI, pydantic and the
    SDK, a 40 ms pause that showed as TTFT p99 +77 ms with 250 streams starting (16 ms frozen;
    issue #16, bench/RESULTS.md)."""
    resolved = settings if settings is not None else Settings()
    metrics = PrometheusMetrics(resolved)
    spans = stream_spans(resolved)
    # With UPSTREAMS: the router's own metrics, beside the streams' (`service.deployment_metrics`).
    deployments = (
        DeploymentMetrics(metrics.registry, [d.name for d in resolved.deployments])
        if resolved.deployments and upstream is None
        else None
    )
    chosen = (
        upstream
        if upstream is not None
        else build_upstream(
            resolved, on_retry=metrics.upstream_retried, router_observer=deployments
        )
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = runtime_of(app)
        runtime.shutdown.attach(asyncio.get_running_loop())
        # Here the server has installed its own signal handlers, which this one passes on to.
        restore_signals = runtime.shutdown.begin_on_signals() if drain_on_signals else None
        level, notice = chosen.startup_notice()
        logger.log(level, notice)
        await chosen.start()
        if runtime.resume is not None:
            await runtime.resume.start()
        if freeze_after_startup:
            gc.collect()  # what startup left behind is freed, not frozen
            gc.freeze()
        try:
            yield
        finally:
            if restore_signals is not None:
                restore_signals()
            if runtime.resume is not None:
                await runtime.resume.aclose()
            await chosen.aclose()
            if spans is not None:
                await asyncio.to_thread(spans.shutdown)  # sends what is still batched

    docs = resolved.serve_docs
    app = FastAPI(
        # FastAPI's own request telemetry is off: the service traces its streams itself
        # (`service.traces`, on its own provider), and the native one, unused, still looked
        # up the global OpenTelemetry providers on every request (1.4% of its CPU, issue #16).
        # opentelemetry-instrument's FastAPI instrumentation is a middleware, not this.
        telemetry={"tracing": False, "metrics": False, "logs": False},
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
        chat=ChatService(
            resolved, chosen, observers=(metrics,) if spans is None else (metrics, spans)
        ),
        api_keys=APIKeys(resolved.api_keys),
        stream_limits=StreamLimits(
            per_process=resolved.max_concurrent_streams,
            per_key=resolved.max_streams_per_key,
            on_reject=metrics.limit_rejected,
        ),
        shutdown=shutdown,
        resume=resume,
        metrics=metrics,
    )
    for router in routers:
        app.include_router(router)
    refuse_hidden_dependencies(app.routes)
    # Middleware added later wraps what was added before: errors are rendered inside CORS, so
    # a 500 carries the CORS headers too. Every middleware here reads only a response's start:
    # a stream's body skips them (`service.http.stream_response._body_send`, issue #16), so one
    # that must see bodies (compression, say) needs that bypass turned off first.
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
