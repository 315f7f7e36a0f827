"""HTTP routes. Thin: parse, hand to `ChatService`, wrap in the streaming response.

`/api/chat/stream` answers POST (a JSON body) and GET (query parameters, for the browser's
`EventSource`, which can only GET). Both take the response-shaping options as query
parameters: `format` (else the `Accept` header decides) and `chunking`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import HTMLResponse, JSONResponse, Response

from service.domain import StreamRequest
from service.errors import InvalidRequest, PayloadTooLarge, server_shutting_down
from service.http.stream_response import ChatStreamResponse, StreamTiming
from service.limits import check_request
from service.outcomes import Delivery
from service.runtime import Runtime, RuntimeDep
from service.schemas import openapi_request_body, parse_chat_request, validate_chat_request
from service.wire.formats import FORMATS
from service.wire.negotiate import choose_format
from service.wire.sse import is_finished_stream_id

router = APIRouter()

STATIC = Path(__file__).parent / "static"
Chunking = Literal["token", "word"]

_bearer = HTTPBearer(auto_error=False, description="One of SERVICE_API_KEYS, when configured")


# Dependencies are `async def`: a plain `def` would cost a thread pool hop per request.
async def admit(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The caller's key id (None when keys are off); 401 without a valid key, 503 when draining."""
    token = credentials.credentials if credentials else None  # None unless a Bearer token
    key_id = runtime.api_keys.identify(token)
    if runtime.shutdown.draining:
        raise server_shutting_down()
    return key_id


CallerDep = Annotated[str | None, Depends(admit)]
FormatQuery = Annotated[
    str | None,
    Query(
        description="Wire format; overrides the Accept header",
        json_schema_extra={"enum": list(FORMATS)},
    ),
]
ChunkingQuery = Annotated[
    Chunking, Query(description="`word` re-cuts text on word boundaries; `token` passes it through")
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]


@dataclass(frozen=True, slots=True)
class StreamOpening:
    """What every stream route resolves before it reads its request: the parts, the caller,
    when the request arrived, and how the answer is to be shaped."""

    runtime: Runtime
    caller: str | None
    received_at: float
    # The route's template (`/api/chat/stream`): a bounded label for metrics.
    route: str
    format_name: str | None
    accept: str | None
    chunking: Chunking
    # A reconnecting EventSource that already has `[DONE]` (answered with 204).
    already_complete: bool


async def open_stream_request(
    request: Request,
    runtime: RuntimeDep,
    caller: CallerDep,
    format: FormatQuery = None,
    chunking: ChunkingQuery = "token",
    last_event_id: LastEventId = None,
) -> StreamOpening:
    return StreamOpening(
        runtime=runtime,
        caller=caller,
        received_at=time.perf_counter(),
        route=getattr(request.scope.get("route"), "path", "unknown"),
        format_name=format,
        accept=request.headers.get("accept"),
        chunking=chunking,
        already_complete=is_finished_stream_id(last_event_id),
    )


OpeningDep = Annotated[StreamOpening, Depends(open_stream_request)]

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {entry.media_type: entry.openapi for entry in FORMATS.values()},
        "description": "The answer, in the negotiated format",
    },
    204: {"description": "EventSource reconnected after the stream's end: nothing more to send"},
    400: {"description": "Malformed JSON, or the upstream refused the request"},
    401: {"description": "SERVICE_API_KEYS are configured and no valid key was sent"},
    406: {"description": "No supported format in Accept"},
    413: {"description": "The body exceeds MAX_BODY_BYTES"},
    422: {"description": "The request names a bad field"},
    429: {"description": "Rate limited upstream; see Retry-After"},
    502: {"description": "Upstream unreachable, failing, or refusing our credentials"},
    503: {"description": "The server is shutting down: retry elsewhere"},
    504: {"description": "Upstream timed out"},
}
_STREAM_ROUTE: dict[str, Any] = {
    "status_code": 200,
    "response_class": ChatStreamResponse,
    "responses": _STREAM_RESPONSES,
}
_RESPONSE_OPTIONS = {"format", "chunking"}
_GET_FIELDS = {"message", "model", "temperature", "max_tokens"}


def _refuse_unknown_parameters(request: Request, allowed: set[str]) -> None:
    """Nothing a client sends is silently ignored: a misspelt parameter is a 422 naming it."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; accepted: "
            + ", ".join(sorted(allowed))
        )
    repeated = sorted(
        name for name in request.query_params if len(request.query_params.getlist(name)) > 1
    )
    if repeated:
        raise InvalidRequest(f"query parameter(s) given more than once: {', '.join(repeated)}")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit`: from its declared
    `Content-Length`, or while a chunked body arrives (so it is never held in memory whole)."""
    too_large = PayloadTooLarge(f"the request body exceeds {limit} bytes (MAX_BODY_BYTES)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise too_large
    return bytes(received)


def _stream(opening: StreamOpening, chat_request: StreamRequest) -> ChatStreamResponse:
    runtime = opening.runtime
    settings = runtime.settings
    check_request(chat_request, settings)
    format_name = choose_format(opening.format_name, opening.accept)
    wire_format = FORMATS[format_name]
    # Taken last: every check that can refuse the request has passed.
    slot = runtime.stream_limits.acquire(opening.caller)
    opened = runtime.chat.open_stream(
        chat_request,
        received_at=opening.received_at,
        route=opening.route,
        wire_format=format_name,
        word_chunks=opening.chunking == "word",
    )
    recorder = opened.recorder

    def on_finish(delivery: Delivery) -> None:
        slot.release()
        recorder.finish(delivery)

    return ChatStreamResponse(
        opened.events,
        wire_format.make_encoder(settings, opened.stream_id),
        timing=StreamTiming.from_settings(settings),
        on_finish=on_finish,
        on_heartbeat=recorder.count_heartbeat,
        cut_off=runtime.shutdown.grace_expired,
        headers={"Vary": "Accept"},
    )


@router.post(
    "/api/chat/stream",
    openapi_extra=openapi_request_body(),
    summary="Stream a chat answer (SSE by default; NDJSON or plain text on request)",
    **_STREAM_ROUTE,
)
async def chat_stream(request: Request, opening: OpeningDep) -> Response:
    if opening.already_complete:
        return Response(status_code=204)
    _refuse_unknown_parameters(request, _RESPONSE_OPTIONS)
    body = await read_body(request, opening.runtime.settings.max_body_bytes)
    return _stream(opening, parse_chat_request(body))


@router.get(
    "/api/chat/stream",
    summary="Stream a chat answer for EventSource (the same events; one user message)",
    **_STREAM_ROUTE,
)
async def chat_stream_get(
    request: Request,
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
    _refuse_unknown_parameters(request, _RESPONSE_OPTIONS | _GET_FIELDS)
    fields = {name: request.query_params[name] for name in _GET_FIELDS & set(request.query_params)}
    return _stream(opening, validate_chat_request(fields))


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
