"""Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

    id: <stream id>:<sequence>
    event: start | end | error        (absent for text deltas: they are plain `message` events)
    data: <one JSON object on one line>

and, after the last event, `data: [DONE]` (what OpenAI-style clients wait for). Payloads are JSON
on a single line, so a `data:` field never needs splitting and no text can break the framing.
"""

from __future__ import annotations

from service.events import ResponseEvent, StreamEnded, StreamFailed, StreamStarted, TextDelta
from service.wire.payloads import delta_payload, event_payload

MEDIA_TYPE = "text/event-stream"
HEARTBEAT = b": ping\n\n"


def event_name(event: ResponseEvent) -> bytes | None:
    if isinstance(event, StreamStarted):
        return b"start"
    if isinstance(event, StreamEnded):
        return b"end"
    if isinstance(event, StreamFailed):
        return b"error"
    return None


def encode_event(event: ResponseEvent, event_id: str) -> bytes:
    if type(event) is TextDelta:
        return b"id: " + event_id.encode() + b"\ndata: " + delta_payload(event.text) + b"\n\n"
    return (
        b"id: "
        + event_id.encode()
        + b"\nevent: "
        + (event_name(event) or b"message")
        + b"\ndata: "
        + event_payload(event)
        + b"\n\n"
    )


def encode_done(event_id: str) -> bytes:
    return b"id: " + event_id.encode() + b"\ndata: [DONE]\n\n"


class SSEEncoder:
    """Numbers the events of one stream; the framing itself is the pure functions above."""

    media_type = MEDIA_TYPE
    heartbeat: bytes | None = HEARTBEAT

    def __init__(self, stream_id: str) -> None:
        self._prefix = stream_id + ":"
        self._sequence = 0

    def _next_id(self) -> str:
        event_id = self._prefix + str(self._sequence)
        self._sequence += 1
        return event_id

    def encode(self, event: ResponseEvent) -> bytes:
        return encode_event(event, self._next_id())

    def close(self) -> bytes:
        return encode_done(self._next_id())
