"""Server-Sent Events framing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

    id: <stream id>:<sequence>
    event: start | end | error        (absent for text deltas: they are plain `message` events)
    data: <one JSON object on one line>

and, after the last event, `data: [DONE]` (what OpenAI-style clients wait for) with the id
`<stream id>:done`. Payloads are JSON on a single line, so a `data:` field never needs splitting
and no text can break the framing.

A browser's `EventSource` reconnects by itself whenever a stream ends; the `start` event carries
`retry:` (its reconnection delay), and a reconnect whose `Last-Event-ID` is a `:done` id is a
stream the client already has in full, answered with 204 so the browser stops
(https://html.spec.whatwg.org/multipage/server-sent-events.html#server-sent-events-intro).
"""

from __future__ import annotations

from json.encoder import encode_basestring, encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from service.events import (
    ReasoningDelta,
    ResponseEvent,
    StreamEnded,
    StreamFailed,
    StreamStarted,
    TextDelta,
)
from service.wire.base import WireFormat
from service.wire.payloads import delta_payload, event_payload

if TYPE_CHECKING:
    from service.settings import Settings

MEDIA_TYPE = "text/event-stream"
HEARTBEAT = b": ping\n\n"
# The end marker of SSE formats that number no events (OpenAI's, the AI SDK's).
DONE = b"data: [DONE]\n\n"
DONE_ID_SUFFIX = ":done"


def is_finished_stream_id(last_event_id: str | None) -> bool:
    """Whether a reconnecting client's `Last-Event-ID` says it already received `[DONE]`."""
    return last_event_id is not None and last_event_id.strip().endswith(DONE_ID_SUFFIX)


def event_name(event: ResponseEvent) -> bytes | None:
    if isinstance(event, StreamStarted):
        return b"start"
    if isinstance(event, StreamEnded):
        return b"end"
    if isinstance(event, StreamFailed):
        return b"error"
    return None


def encode_event(event: ResponseEvent, event_id: str, retry_ms: int | None = None) -> bytes:
    if type(event) is TextDelta:
        return b"id: " + event_id.encode() + b"\ndata: " + delta_payload(event.text) + b"\n\n"
    return (
        (b"retry: %d\n" % retry_ms if retry_ms is not None else b"")
        + b"id: "
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

    def __init__(self, stream_id: str, *, retry_ms: int | None = None) -> None:
        self._stream_id = stream_id
        self._prefix = stream_id + ":"
        self._prefix_bytes = self._prefix.encode()
        self._sequence = 0
        self._retry_ms = retry_ms

    def _next_id(self) -> str:
        event_id = self._prefix + str(self._sequence)
        self._sequence += 1
        return event_id

    def encode(self, event: ResponseEvent) -> bytes:
        if type(event) is TextDelta:  # the hot path first, `encode_event` inlined (issue #16)
            sequence = self._sequence
            self._sequence = sequence + 1
            try:  # `json_string`, inlined
                text = encode_basestring(event.text).encode()
            except UnicodeEncodeError:  # a lone surrogate: sent as its JSON escape
                text = encode_basestring_ascii(event.text).encode()
            return b'id: %s%d\ndata: {"type":"delta","content":%s}\n\n' % (
                self._prefix_bytes,
                sequence,
                text,
            )
        if type(event) is ReasoningDelta:
            return b""  # this format carries the answer only (service.events)
        if isinstance(event, StreamStarted):
            return encode_event(event, self._next_id(), self._retry_ms)
        return encode_event(event, self._next_id())

    def close(self) -> bytes:
        return encode_done(self._stream_id + DONE_ID_SUFFIX)


def _encoder(settings: Settings, stream_id: str) -> SSEEncoder:
    return SSEEncoder(stream_id, retry_ms=settings.sse_retry_ms)


# One SSE event as OpenAPI 3.2 describes event streams:
# https://spec.openapis.org/oas/v3.2.0.html#special-considerations-for-server-sent-events
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "a JSON payload, or [DONE] last"},
        "event": {"enum": ["start", "end", "error", "message"]},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
FORMAT = WireFormat(
    name="sse",
    media_type=MEDIA_TYPE,
    make_encoder=_encoder,
    # With itemSchema, `schema` describes the whole stream: the list of its events.
    openapi={"itemSchema": _EVENT_SCHEMA, "schema": {"type": "array", "items": _EVENT_SCHEMA}},
)
