"""`POST /api/chat`: the endpoint the Vercel AI SDK's `useChat` talks to.

It takes the body `DefaultChatTransport` sends (`id`, `messages` as UI messages with `parts`,
`trigger`, `messageId`) and answers in the UI message stream protocol v1
(`service.wire.ui_message_stream`). Everything else (limits, keys, heartbeats, cancellation
when `stop()` aborts the fetch, metrics) is the shared streaming path (`service.streaming`).

Parts: `text` parts become the message's content (joined in order). `step-start` (a marker
between steps) and `reasoning` (the model's own earlier thinking, which providers ask not to
send back) are ignored as harmless. Every other part type (files, tools, sources, data) is
refused with a 422 naming it, since the service streams text chat and would otherwise drop it
silently. A message with no text (a stopped answer) is sent with empty content.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from service.domain import ChatMessage, StreamRequest
from service.http.request_route import RequestRoute
from service.http.stream_response import ChatStreamResponse
from service.schemas import describe_validation_error, inline_definitions
from service.streaming import (
    STREAM_RESPONSES,
    open_stream_request,
    read_body,
    refuse_unknown_parameters,
    stream_parameters,
    stream_response,
)
from service.wire.ui_message_stream import FORMAT

# Its route reads its request by hand: called directly (service.http.request_route).
router = APIRouter(route_class=RequestRoute)

IGNORED_PARTS = frozenset({"step-start", "reasoning"})


class UIMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    role: Literal["system", "user", "assistant"]
    # Parts are the SDK's own objects: only their `type` and a text part's `text` are read;
    # fields the SDK adds (`state`, `providerMetadata`) are left alone.
    parts: list[dict[str, Any]]
    metadata: Any = None

    @field_validator("parts")
    @classmethod
    def _text_parts_only(cls, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, part in enumerate(parts):
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"part {index}: a text part needs a string 'text'")
            elif kind not in IGNORED_PARTS:
                raise ValueError(
                    f"part {index}: part type {str(kind)[:40]!r} is not supported; this "
                    "endpoint takes text parts (step-start and reasoning parts are ignored)"
                )
        return parts

    def content(self) -> str:
        return "".join(part["text"] for part in self.parts if part.get("type") == "text")


class UIChatRequest(BaseModel):
    """`useChat`'s body, plus the options `/api/chat/stream` takes (sent through the
    transport's `body`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, max_length=200)
    messages: list[UIMessageIn] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] | None = None
    messageId: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)

    def to_stream_request(self) -> StreamRequest:
        messages = tuple(ChatMessage(m.role, m.content()) for m in self.messages)
        return StreamRequest(messages, self.model, self.temperature, self.max_tokens)


def parse_ui_chat_request(body: bytes) -> UIChatRequest:
    try:
        return UIChatRequest.model_validate_json(body, strict=True)
    except ValidationError as error:
        raise describe_validation_error(error) from None


@router.post(
    "/api/chat",
    summary="Stream a chat answer to the AI SDK's useChat (UI message stream protocol v1)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": inline_definitions(UIChatRequest.model_json_schema())
                }
            },
        },
        **stream_parameters("chunking"),
    },
    status_code=200,
    response_class=ChatStreamResponse,
    responses={
        **STREAM_RESPONSES,
        200: {
            "content": {FORMAT.media_type: FORMAT.openapi},
            "description": "The answer as UI message chunks",
        },
    },
)
async def ui_chat(request: Request) -> Response:
    opening = open_stream_request(request)
    refuse_unknown_parameters(request, {"chunking"} | opening.resume_options)
    body = await read_body(request, opening.runtime.settings.max_body_bytes)
    chat = parse_ui_chat_request(body)
    # With REDIS_URL, the chat's id names its active stream for useChat's resume.
    return await stream_response(
        opening, chat.to_stream_request(), format_name=FORMAT.name, chat_id=chat.id
    )
