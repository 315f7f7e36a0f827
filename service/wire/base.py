"""What the HTTP layer needs from a wire format."""

from __future__ import annotations

from typing import Protocol

from service.events import ResponseEvent


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
