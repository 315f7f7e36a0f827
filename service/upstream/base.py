"""What every upstream (a real provider or the demo model) offers the rest of the service."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from service.domain import CompletionParams
from service.events import UpstreamEvent


class ChatUpstream(Protocol):
    """A source of chat completions.

    Contract of `stream`: yields `TextDelta`, `Finished` and `UsageReported` in the order the
    model produced them, and at most one `Failed`, which is last. It never raises, except
    `CancelledError` when its consumer is cancelled; closing the iterator (or cancelling it)
    releases the upstream connection at once.
    """

    # The provider's name in the provider table (`service.upstream.providers`).
    provider: str
    # Whether answers are canned (the embedded demo model), for `/healthz` and the chat page.
    is_demo: bool

    def resolve_model(self, requested: str | None) -> str:
        """The concrete model a request for `requested` (None: the default) is sent to."""
        ...

    def startup_notice(self) -> tuple[int, str]:
        """The log level and line that say, at start-up, what the service streams from."""
        ...

    def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamEvent, None]: ...

    async def aclose(self) -> None: ...
