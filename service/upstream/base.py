"""What every upstream (a real provider or the demo model) offers the rest of the service."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from service.events import UpstreamEvent


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(slots=True, frozen=True)
class CompletionParams:
    """One chat completion to stream; `model` is already resolved to a concrete name."""

    model: str
    messages: tuple[ChatMessage, ...]
    temperature: float | None = None
    max_tokens: int | None = None


class ChatUpstream(Protocol):
    """A source of chat completions.

    Contract of `stream`: yields `TextDelta`, `Finished` and `UsageReported` in the order the
    model produced them, and at most one `Failed`, which is last. It never raises, except
    `CancelledError` when its consumer is cancelled; closing the iterator (or cancelling it)
    releases the upstream connection at once.
    """

    provider: str

    def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamEvent, None]: ...

    async def aclose(self) -> None: ...
