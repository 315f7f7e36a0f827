"""The domain types every entry point builds and every upstream reads.

HTTP bodies of any shape (`/api/chat/stream`'s, and the routes on the roadmap: the AI SDK's UI
messages, OpenAI's chat completions) are translated into a `StreamRequest`; the chat service turns
that into `CompletionParams` for an upstream once the model is resolved. Neither type knows HTTP
or pydantic, so both sides import this module and not each other (issue #7).
"""

from __future__ import annotations

from dataclasses import dataclass


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
