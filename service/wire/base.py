"""What the HTTP layer needs from a wire format, and the registry entry that describes one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from service.events import ResponseEvent

if TYPE_CHECKING:
    from service.settings import Settings


class Encoder(Protocol):
    """Encodes the events of one stream, in order.

    `encode` is called once per event, `close` once after the last one (it returns the format's
    end marker, possibly empty). `heartbeat` is sent when the stream is idle, or `None` when the
    format has no way to say "still here" without changing the content.
    """

    media_type: str
    heartbeat: bytes | None

    def encode(self, event: ResponseEvent) -> bytes: ...

    def close(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One entry of the format registry (`service.wire.formats`): negotiation, the 406 message
    and the OpenAPI document are derived from these."""

    # The `format` query parameter's value.
    name: str
    media_type: str
    # A fresh encoder for one stream: (settings, stream id) -> encoder. Settings decide the
    # options (SSE `retry:`, whether NDJSON sends heartbeats).
    make_encoder: Callable[[Settings, str], Encoder]
    # The OpenAPI 3.2 media type object of a 200 answer (`itemSchema` for a sequence of items:
    # https://spec.openapis.org/oas/v3.2.0.html#sequential-media-types).
    openapi: dict[str, Any]
    # Response headers the format's clients look for.
    headers: Mapping[str, str] = field(default_factory=dict)
