"""`GET /metrics`: the Prometheus exposition (`service.prometheus_metrics`), summed over all
worker processes when there are several.

Open like `/healthz` (counts and timings, no prompt, answer or key): keep it off the public
network, e.g. serve the API through a proxy that routes only `/api/` (docs/operations.md, Metrics).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service.prometheus_metrics import CONTENT_TYPE
from service.runtime import RuntimeDep

router = APIRouter()


@router.get(
    "/metrics",
    summary="Prometheus metrics: TTFT, overhead, tokens, streams by outcome (docs/operations.md)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    # Collection reads and formats every series (and, with several workers, their files): off
    # the event loop, so streams in flight do not wait for a scrape.
    body = await run_in_threadpool(runtime.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)
