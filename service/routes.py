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
from starlette.responses import HTMLResponse, Response

from service.chat import ChatService
from service.errors import InvalidRequest
from service.http.stream_response import ChatStreamResponse
from service.schemas import (
    ChatRequest,
    openapi_request_body,
    parse_chat_request,
    validate_chat_request,
)
from service.wire.negotiate import FormatName, choose_format, encoder_factory
from service.wire.sse import is_finished_stream_id

router = APIRouter()

STATIC = Path(__file__).parent / "static"
Chunking = Literal["token", "word"]


def get_chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
FormatQuery = Annotated[
    FormatName | None, Query(description="Wire format; overrides the Accept header")
]
ChunkingQuery = Annotated[
    Chunking, Query(description="`word` re-cuts text on word boundaries; `token` passes it through")
]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", include_in_schema=False)]

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}, "application/x-ndjson": {}, "text/plain": {}},
        "description": "The answer, in the negotiated format",
    },
    204: {"description": "EventSource reconnected after the stream's end: nothing more to send"},
    400: {"description": "Malformed JSON, or the upstream refused the request"},
    406: {"description": "No supported format in Accept"},
    422: {"description": "The request names a bad field"},
    429: {"description": "Rate limited upstream; see Retry-After"},
    502: {"description": "Upstream unreachable, failing, or refusing our credentials"},
    504: {"description": "Upstream timed out"},
}
_STREAM_ROUTE: dict[str, Any] = {
    "status_code": 200,
    "response_class": ChatStreamResponse,
    "responses": _STREAM_RESPONSES,
}
_RESPONSE_OPTIONS = {"format", "chunking"}
_GET_FIELDS = {"message", "prompt", "model", "temperature", "max_tokens"}


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


def _stream(
    request: Request,
    chat: ChatService,
    body: ChatRequest,
    *,
    received_at: float,
    format_name: FormatName | None,
    chunking: Chunking,
) -> ChatStreamResponse:
    settings = chat.settings
    chosen = choose_format(format_name, request.headers.get("accept"))
    make_encoder = encoder_factory(
        chosen, sse_retry_ms=settings.sse_retry_ms, ndjson_heartbeat=settings.ndjson_heartbeat
    )
    stream_id, events = chat.open_stream(
        body, received_at=received_at, word_chunks=chunking == "word"
    )
    return ChatStreamResponse(
        events,
        make_encoder(stream_id),
        heartbeat_seconds=settings.heartbeat_seconds,
        send_timeout_seconds=settings.send_timeout_seconds,
        headers={"Vary": "Accept"},
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
    format: FormatQuery = None,
    chunking: ChunkingQuery = "token",
    last_event_id: LastEventId = None,
) -> Response:
    received_at = time.perf_counter()
    if is_finished_stream_id(last_event_id):
        return Response(status_code=204)
    _refuse_unknown_parameters(request, _RESPONSE_OPTIONS)
    body = parse_chat_request(await request.body())
    return _stream(
        request, chat, body, received_at=received_at, format_name=format, chunking=chunking
    )


@router.get(
    "/api/chat/stream",
    summary="Stream a chat answer for EventSource (the same events; one user message)",
    **_STREAM_ROUTE,
)
async def chat_stream_get(
    request: Request,
    chat: ChatServiceDep,
    message: Annotated[str | None, Query(description="The user's message")] = None,
    prompt: Annotated[str | None, Query(description="Same as message")] = None,
    model: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
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
        request, chat, body, received_at=received_at, format_name=format, chunking=chunking
    )


@cache
def _page() -> bytes:
    return (STATIC / "index.html").read_bytes()


@router.get("/", response_class=HTMLResponse, summary="The chat page", include_in_schema=False)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(_page())


@router.get("/healthz", summary="Liveness, and which upstream is configured")
async def healthz(chat: ChatServiceDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "provider": chat.upstream.provider,
        "model": chat.resolve_model(None),
        "demo": chat.upstream.provider == "demo",
    }
