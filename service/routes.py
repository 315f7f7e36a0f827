"""HTTP routes. Thin: parse, hand to `ChatService`, wrap in the streaming response.

`/api/chat/stream` answers POST (a JSON body) and GET (query parameters, for the browser's
`EventSource`, which can only GET). Both take the response-shaping options as query
parameters: `format` (else the `Accept` header decides) and `chunking`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from service.http.request_route import RequestRoute
from service.runtime import RuntimeDep
from service.schemas import openapi_request_body, parse_chat_request, validate_chat_request
from service.streaming import (
    STREAM_ROUTE,
    OpeningDep,
    open_stream_request,
    read_body,
    refuse_unknown_parameters,
    stream_parameters,
    stream_response,
)

# The stream routes read their request by hand: called directly (service.http.request_route).
router = APIRouter(route_class=RequestRoute)

STATIC = Path(__file__).parent / "static"
_RESPONSE_OPTIONS = {"format", "chunking"}
_GET_FIELDS = {"message", "model", "temperature", "max_tokens"}


@router.post(
    "/api/chat/stream",
    openapi_extra={**openapi_request_body(), **stream_parameters("format", "chunking")},
    summary="Stream a chat answer (SSE by default; NDJSON or plain text on request)",
    **STREAM_ROUTE,
)
async def chat_stream(request: Request) -> Response:
    opening = open_stream_request(request)
    if opening.already_complete:
        return Response(status_code=204)
    refuse_unknown_parameters(request, _RESPONSE_OPTIONS | opening.resume_options)
    body = await read_body(request, opening.runtime.settings.max_body_bytes)
    return await stream_response(opening, parse_chat_request(body))


@router.get(
    "/api/chat/stream",
    summary="Stream a chat answer for EventSource (the same events; one user message)",
    openapi_extra=stream_parameters("format", "chunking", key_read_by_hand=False),
    **STREAM_ROUTE,
)
async def chat_stream_get(
    request: Request,
    # A dependency here (not read by hand as on POST): resolved before the query parameters
    # below are validated, so a client without a key gets its 401 before any 422.
    opening: OpeningDep,
    # Declared for validation and the OpenAPI document; read below through `validate_chat_request`
    # with the POST body's rules.
    message: Annotated[str, Query(min_length=1, description="The user's message")],
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    temperature: Annotated[float | None, Query(ge=0, le=2)] = None,
    max_tokens: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    if opening.already_complete:
        return Response(status_code=204)
    refuse_unknown_parameters(request, _RESPONSE_OPTIONS | _GET_FIELDS | opening.resume_options)
    resume = opening.runtime.resume
    if resume is not None and opening.last_event_id is not None:
        # EventSource reconnecting to this URL mid-stream: the stream it had, resumed.
        resumed = await resume.reconnect(
            opening.last_event_id, opening.caller, request.is_disconnected
        )
        if resumed is not None:
            return resumed
    fields = {name: request.query_params[name] for name in _GET_FIELDS & set(request.query_params)}
    return await stream_response(opening, validate_chat_request(fields))


@cache
def _page() -> bytes:
    return (STATIC / "index.html").read_bytes()


@router.get("/", response_class=HTMLResponse, summary="The chat page", include_in_schema=False)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(_page())


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    upstream = runtime.chat.upstream
    return {
        "status": "ok",
        "provider": upstream.provider,
        "model": upstream.resolve_model(None),
        "demo": upstream.is_demo,
    }


@router.get(
    "/readyz",
    summary="Readiness: configured and not shutting down (503 while draining)",
    responses={503: {"description": "Draining after SIGTERM: route no new streams here"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    draining = runtime.shutdown.draining
    return JSONResponse(
        {"status": "draining" if draining else "ready"}, status_code=503 if draining else 200
    )
