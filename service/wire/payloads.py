"""The JSON object each response event becomes; shared by SSE `data:` and NDJSON lines.

Every object has `"type"` and a `"content"` string (empty when the event carries no text), so
the simplest client that appends `content` of every object gets exactly the answer. Text is
JSON-escaped, never altered: newlines, CR, quotes and `data:` look-alikes stay inside one JSON
string on one line, and come back byte for byte from any JSON parser.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

import msgspec

from service.events import ResponseEvent, StreamEnded, StreamFailed, StreamStarted, TextDelta

# The objects above, for the OpenAPI document.
PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "content"],
    "properties": {
        "type": {"enum": ["start", "delta", "end", "error", "ping"]},
        "content": {"type": "string"},
    },
}


def json_string(text: str) -> bytes:
    """`text` as a JSON string literal in UTF-8 (the C encoder; ~1 µs for a token).

    A lone surrogate (a model can emit half an emoji as `\\ud83d`) has no UTF-8 form; it is
    sent as a JSON `\\u` escape instead, which JSON parsers turn back into the same string.
    """
    try:
        return encode_basestring(text).encode()
    except UnicodeEncodeError:
        return encode_basestring_ascii(text).encode()


_encode_object = msgspec.json.Encoder().encode


def json_object(fields: dict[str, Any]) -> bytes:
    """`fields` as compact JSON in UTF-8: by msgspec (a stream's start and end objects, an error
    body: a few per request, issue #16), by the standard library with `\\u` escapes for what
    msgspec cannot encode (a lone surrogate in an upstream's message, say)."""
    try:
        return _encode_object(fields)
    except (UnicodeEncodeError, msgspec.EncodeError, OverflowError, TypeError):
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


def delta_payload(text: str) -> bytes:
    # Hot path: one per token, so the object is assembled rather than dumped.
    return b'{"type":"delta","content":' + json_string(text) + b"}"


def event_payload(event: ResponseEvent) -> bytes:
    """The object for `event`; a `ReasoningDelta` has none (the formats built on these objects
    carry the answer only)."""
    if type(event) is TextDelta:
        return delta_payload(event.text)
    if isinstance(event, StreamStarted):
        start = {"type": "start", "content": "", "id": event.stream_id, "model": event.model}
        if event.deployment is not None:  # with UPSTREAMS: the deployment that answers
            start["deployment"] = event.deployment
        return json_object(start)
    if isinstance(event, StreamEnded):
        return json_object(
            {
                "type": "end",
                "content": "",
                "finish_reason": event.finish_reason,
                "usage": event.usage.as_dict() if event.usage else None,
                "metrics": event.metrics.as_dict(),
            }
        )
    if isinstance(event, StreamFailed):
        return json_object({"type": "error", "content": "", "error": event.error.as_dict()})
    raise ValueError(f"no payload for {type(event).__name__}")


def error_body(error_fields: dict[str, Any]) -> bytes:
    """The body of an HTTP error response: `{"error": {...}}`."""
    return json_object({"error": error_fields})
