"""HTTP routes. Thin: parse, hand to `ChatService`, wrap in the streaming response."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.chat import ChatService
from service.http.stream_response import ChatStreamResponse
from service.schemas import openapi_request_body, parse_chat_request
from service.wire.sse import SSEEncoder

router = APIRouter()


def get_chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The answer, as events"},
    400: {"description": "Malformed JSON, or the upstream refused the request"},
    422: {"description": "The request names a bad field"},
    429: {"description": "Rate limited upstream; see Retry-After"},
    502: {"description": "Upstream unreachable, failing, or refusing our credentials"},
    504: {"description": "Upstream timed out"},
}


@router.post(
    "/api/chat/stream",
    status_code=200,
    response_class=ChatStreamResponse,
    responses=_STREAM_RESPONSES,
    openapi_extra=openapi_request_body(),
    summary="Stream a chat answer as Server-Sent Events",
)
async def chat_stream(request: Request, chat: ChatServiceDep) -> ChatStreamResponse:
    received_at = time.perf_counter()
    body = parse_chat_request(await request.body())
    stream_id, events = chat.open_stream(body, received_at=received_at)
    settings = chat.settings
    return ChatStreamResponse(
        events,
        SSEEncoder(stream_id),
        heartbeat_seconds=settings.heartbeat_seconds,
        send_timeout_seconds=settings.send_timeout_seconds,
    )


@router.get("/healthz", summary="Liveness, and which upstream is configured")
async def healthz(chat: ChatServiceDep) -> dict[str, Any]:
    return {
        "status": "ok",
        "provider": chat.upstream.provider,
        "model": chat.resolve_model(None),
        "demo": chat.upstream.provider == "demo",
    }
