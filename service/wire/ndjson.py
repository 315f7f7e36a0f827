"""Newline-delimited JSON (https://github.com/ndjson/ndjson-spec): one object per line.

The objects are exactly the SSE `data:` payloads (`service.wire.payloads`), including the final
`end` object with usage and metrics and the `error` object; no `[DONE]` line, the end of the
body is the end. A `{"type":"ping"}` heartbeat line is sent only when enabled, because a
client that treats every line as an event must know to skip it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.events import ReasoningDelta, ResponseEvent
from service.wire.base import WireFormat
from service.wire.payloads import PAYLOAD_SCHEMA, event_payload

if TYPE_CHECKING:
    from service.settings import Settings

MEDIA_TYPE = "application/x-ndjson"
HEARTBEAT = b'{"type":"ping","content":""}\n'


class NDJSONEncoder:
    media_type = MEDIA_TYPE

    def __init__(self, *, heartbeat: bool) -> None:
        self.heartbeat: bytes | None = HEARTBEAT if heartbeat else None

    def encode(self, event: ResponseEvent) -> bytes:
        if type(event) is not ReasoningDelta:
            return event_payload(event) + b"\n"
        return b""  # this format carries the answer only (service.events)

    def close(self) -> bytes:
        return b""


def _encoder(settings: Settings, stream_id: str) -> NDJSONEncoder:
    return NDJSONEncoder(heartbeat=settings.ndjson_heartbeat)


FORMAT = WireFormat(
    name="ndjson",
    media_type=MEDIA_TYPE,
    make_encoder=_encoder,
    openapi={"itemSchema": PAYLOAD_SCHEMA},
)
