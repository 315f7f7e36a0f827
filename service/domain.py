"""The domain types every entry point builds and every upstream reads.

HTTP bodies of any shape (`/api/chat/stream`'s, and the routes on the roadmap: the AI SDK's UI
messages) are translated into a `StreamRequest`; the chat service turns that into
`CompletionParams` for an upstream once the model is resolved. OpenAI's own APIs (`/v1/chat/
completions`, `/v1/responses`) are relayed as the client wrote them instead: a
`PassthroughRequest` becomes `PassthroughParams` the same way (issue #8). Whatever the shape,
the limits read a `RequestSize`. None of these types knows HTTP or pydantic, so both sides import
this module and not each other (issue #7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# The OpenAI APIs relayed untouched, by their SDK names.
OpenAIApi = Literal["chat.completions", "responses"]


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(slots=True, frozen=True)
class StreamRequest:
    """What a client asked for, whatever the body looked like; `model` None means the
    upstream's default."""

    messages: tuple[ChatMessage, ...]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class CompletionParams:
    """One chat completion to stream; `model` is already resolved to a concrete name."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class RequestSize:
    """What the limits bound (`service.limits`), counted from a body of any shape; the field
    names are the ones the client used, so a 422 names what it sent."""

    messages: int
    input_chars: int
    max_tokens: int | None
    messages_field: str = "messages"
    max_tokens_field: str = "max_tokens"


@dataclass(slots=True, frozen=True)
class PassthroughRequest:
    """An OpenAI API request to relay as the client wrote it; `model` None means the upstream's
    default."""

    api: OpenAIApi
    # The client's JSON object, as decoded; never modified (the upstream copies what it sends).
    body: dict[str, Any]
    model: str | None
    stream: bool
    size: RequestSize


@dataclass(slots=True, frozen=True)
class PassthroughParams:
    """One OpenAI API call to relay; `model` is already resolved to a concrete name."""

    api: OpenAIApi
    body: dict[str, Any]
    model: str
    stream: bool
