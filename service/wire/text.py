"""Plain text: only the answer's text, for `curl` and the simplest clients.

An error after the first token is appended as a last line `[error: <message>]` (on a line of
its own). There is no heartbeat: any byte would become part of the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.events import ResponseEvent, StreamFailed, TextDelta
from service.wire.base import WireFormat

if TYPE_CHECKING:
    from service.settings import Settings

MEDIA_TYPE = "text/plain"


class TextEncoder:
    media_type = MEDIA_TYPE
    heartbeat: bytes | None = None

    def __init__(self) -> None:
        self._ends_with_newline = True

    def encode(self, event: ResponseEvent) -> bytes:
        if isinstance(event, TextDelta):
            self._ends_with_newline = event.text.endswith("\n")
            # A lone surrogate has no UTF-8 form; it becomes U+FFFD rather than breaking the body.
            return event.text.encode("utf-8", "replace")
        if isinstance(event, StreamFailed):
            prefix = "" if self._ends_with_newline else "\n"
            return f"{prefix}[error: {event.error.message}]\n".encode()
        return b""

    def close(self) -> bytes:
        return b""


def _encoder(settings: Settings, stream_id: str) -> TextEncoder:
    return TextEncoder()


FORMAT = WireFormat(
    name="text",
    media_type=MEDIA_TYPE,
    make_encoder=_encoder,
    openapi={"schema": {"type": "string"}},
)
