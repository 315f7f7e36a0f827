"""HTTP routes. Thin: parse, hand to `ChatService`, wrap in the streaming response.

`/api/chat/stream` answers POST (a JSON body) and GET (query parameters, for the browser's
`EventSource`, which can only GET). Both take the response-shaping options as query
parameters: `format` (else the `Accept` header decides) and `chunking`.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import HTMLResponse, JSONResponse, Response

from service.chat import ChatService
from service.errors import InvalidRequest, PayloadTooLarge
from service.http.stream_response import ChatStreamResponse, shutting_down
from service.schemas import (
    ChatRequest,
    enforce_limits,
    openapi_request_body,
    parse_chat_request,
    validate_chat_request,
)
from service.wire.negotiate import FormatName, choose_format, encoder_factory
from service.wire.sse import is_finished_stream_id

router = APIRouter()

STATIC = Path(__file__).parent / "static"
Chunking = Literal["token", "word"]


# Dependencies are `async def`: a plain `def` would cost a thread pool hop per request.
async def get_chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


_bearer = HTTPBearer(auto_error=False, description="One of SERVICE_API_KEYS, when configured")


async def admit(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The caller's key id (None when keys are off); 401 without a valid key, 503 when draining."""
    token = credentials.credentials if credentials else None  # None unless a Bearer token
    key_id: str | None = request.app.state.api_keys.identify(token)
    if request.app.state.shutdown.draining:
        raise shutting_down()
    return key_id


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
CallerDep = Annotated[str | None, Depends(admit)]
FormatQuery = Annotated[
    FormatName | None, Query(description="Wire format; overrides the Accept header")
]
ChunkingQuery = Annotated[
    Chunking, Query(description="`word` re-cuts text on word boundaries; `token` passes it through")
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]

_PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "content"],
    "properties": {
        "type": {"enum": ["start", "delta", "end", "error", "ping"]},
        "content": {"type": "string"},
    },
}
# One SSE event (https://spec.openapis.org/oas/v3.2.0.html#special-considerations-for-server-sent-events)
_SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "a JSON payload, or [DONE] last"},
        "event": {"enum": ["start", "end", "error", "message"]},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            # With itemSchema, `schema` describes the whole stream: the list of its events.
            "text/event-stream": {
                "itemSchema": _SSE_EVENT_SCHEMA,
                "schema": {"type": "array", "items": _SSE_EVENT_SCHEMA},
            },
            "application/x-ndjson": {"itemSchema": _PAYLOAD_SCHEMA},
            "text/plain": {"schema": {"type": "string"}},
        },
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


def _stream(
    request: Request,
    chat: ChatService,
    body: ChatRequest,
    *,
    caller: str | None,
    received_at: float,
    format_name: FormatName | None,
    chunking: Chunking,
) -> ChatStreamResponse:
    settings = chat.settings
    enforce_limits(body, settings)
    chosen = choose_format(format_name, request.headers.get("accept"))
    make_encoder = encoder_factory(
        chosen, sse_retry_ms=settings.sse_retry_ms, ndjson_heartbeat=settings.ndjson_heartbeat
    )
    # Taken last: every check that can refuse the request has passed.
    slot = request.app.state.stream_limits.acquire(caller)
    opened = chat.open_stream(body, received_at=received_at, word_chunks=chunking == "word")
    request.state.stream_id = opened.stream_id  # for the access log (service.http.access_log)
    return ChatStreamResponse(
        opened.events,
        make_encoder(opened.stream_id),
        heartbeat_seconds=settings.heartbeat_seconds,
        send_timeout_seconds=settings.send_timeout_seconds,
        headers={"Vary": "Accept"},
        slot=slot,
        shutdown=request.app.state.shutdown,
        on_finish=opened.recorder.finish,
    )


@router.post(
    "/api/chat/stream",
    openapi_extra=openapi_request_body(),
    summary="Stream a chat answer (SSE by default; NDJSON or plain text on request)",
    **_STREAM_ROUTE,
)
async def chat_stream(
    request: Request,
    chat: ChatServiceDep,
    caller: CallerDep,
    format: FormatQuery = None,
    chunking: ChunkingQuery = "token",
    last_event_id: LastEventId = None,
) -> Response:
    received_at = time.perf_counter()
    if is_finished_stream_id(last_event_id):
        return Response(status_code=204)
    _refuse_unknown_parameters(request, _RESPONSE_OPTIONS)
    body = parse_chat_request(await read_body(request, chat.settings.max_body_bytes))
    return _stream(
        request,
        chat,
        body,
        caller=caller,
        received_at=received_at,
        format_name=format,
        chunking=chunking,
    )


@router.get(
    "/api/chat/stream",
    summary="Stream a chat answer for EventSource (the same events; one user message)",
    **_STREAM_ROUTE,
)
async def chat_stream_get(
    request: Request,
    chat: ChatServiceDep,
    caller: CallerDep,
    message: Annotated[str, Query(min_length=1, description="The user's message")],
    model: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    temperature: Annotated[float | None, Query(ge=0, le=2)] = None,
    max_tokens: Annotated[int | None, Query(ge=1)] = None,
    format: FormatQuery = None,
    chunking: ChunkingQuery = "token",
    last_event_id: LastEventId = None,
) -> Response:
    received_at = time.perf_counter()
    if is_finished_stream_id(last_event_id):
        return Response(status_code=204)
    _refuse_unknown_parameters(request, _RESPONSE_OPTIONS | _GET_FIELDS)
    fields = {name: request.query_params[name] for name in _GET_FIELDS & set(request.query_params)}
    body = validate_chat_request(fields)
    return _stream(
        request,
        chat,
        body,
        caller=caller,
        received_at=received_at,
        format_name=format,
        chunking=chunking,
    )


@cache
def _page() -> bytes:
    return (STATIC / "index.html").read_bytes()


@router.get("/", response_class=HTMLResponse, summary="The chat page", include_in_schema=False)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(_page())


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz(chat: ChatServiceDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "provider": chat.upstream.provider,
        "model": chat.resolve_model(None),
        "demo": chat.upstream.provider == "demo",
    }


@router.get(
    "/readyz",
    summary="Readiness: configured and not shutting down (503 while draining)",
    responses={503: {"description": "Draining after SIGTERM: route no new streams here"}},
)
async def readyz(request: Request) -> JSONResponse:
    draining = request.app.state.shutdown.draining
    return JSONResponse(
        {"status": "draining" if draining else "ready"}, status_code=503 if draining else 200
    )
