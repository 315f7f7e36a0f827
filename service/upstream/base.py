"""What every upstream (a real provider or the demo model) offers the rest of the service."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from service.domain import CompletionParams, PassthroughParams
from service.events import UpstreamBatch


class ChatUpstream(Protocol):
    """A source of chat completions.

    Contract of `stream`: yields `TextDelta`, `Finished` and `UsageReported` in the order the
    model produced them, and at most one `Failed`, which is last, in batches: the events each
    read from the upstream completed (`UpstreamBatch`, never empty; a read that completes none
    yields nothing). It never raises, except `CancelledError` when its consumer is cancelled;
    closing the iterator (or cancelling it) releases the upstream connection at once.
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

    def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamBatch, None]: ...

    def passthrough(self, params: PassthroughParams) -> AsyncGenerator[UpstreamBatch, None]:
        """An OpenAI API call relayed as it is (issue #8): `Relayed` events carrying the
        upstream's own bytes (one per SSE event, or the whole answer when not streamed), and at
        most one `Failed`, last; nothing before the first event that carries output, so that a
        `Failed` first still means the upstream refused. The same contract as `stream`
        otherwise."""
        ...

    async def list_models(self) -> list[dict[str, Any]]:
        """OpenAI `model` objects for `GET /v1/models`; raises a `ServiceError` when the
        upstream fails."""
        ...

    async def start(self) -> None:
        """Called once, in the app's lifespan with its loop running, before any stream."""
        ...

    async def aclose(self) -> None: ...
