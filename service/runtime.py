"""The application's parts, joined once: one typed, frozen object served by one dependency.

Routes never read `request.app.state.*` ad hoc (which mypy cannot check); they ask for
`RuntimeDep` and get every part with its type (issue #7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

from service.auth import APIKeys
from service.chat import ChatService
from service.limits import StreamLimits
from service.prometheus_metrics import PrometheusMetrics
from service.settings import Settings
from service.shutdown import ShutdownCoordinator

if TYPE_CHECKING:  # built only when REDIS_URL is set, so that redis is imported only then
    from service.resume.hub import ResumableStreams


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    chat: ChatService
    api_keys: APIKeys
    stream_limits: StreamLimits
    shutdown: ShutdownCoordinator
    metrics: PrometheusMetrics
    resume: ResumableStreams | None = None


def runtime_of(app: Starlette) -> Runtime:
    runtime = app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


# `async def`: a plain `def` dependency would cost a thread pool hop per request.
async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request.app)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
