"""How response events are kept in the stream store: pure functions, events <-> text.

The store keeps the *normalized* events, not the bytes of a wire format: a resuming client is
served by the same encoder as the original one (`service.wire`), so the wire encoding stays one
pure function per format, and keeping an event costs less than encoding it (a text delta is its
text behind a one-letter tag). Each event is one string:

    d<text>                         TextDelta
    r<text>                         ReasoningDelta
    s{"id":…,"model":…[,"deployment":…]}   StreamStarted
    e{"finish_reason":…,"usage":…,"metrics":…}   StreamEnded
    f{"status":…,"error":{…}}       StreamFailed (the error's public fields and HTTP status)

and one store entry holds a batch of them as a JSON array of these strings (JSON's C codec, and
lone surrogates a model may emit survive as `\\u` escapes).
"""

from __future__ import annotations

import json
from typing import Any

from service.errors import ServiceError
from service.events import (
    ReasoningDelta,
    ResponseEvent,
    StreamEnded,
    StreamFailed,
    StreamMetrics,
    StreamStarted,
    TextDelta,
    Usage,
)
from service.wire.payloads import json_object


class StoredError(ServiceError):
    """An error read back from the store: the same public fields and status as the original."""

    def __init__(self, fields: dict[str, Any], status_code: int) -> None:
        super().__init__(
            str(fields.get("message", "")), retry_after_seconds=fields.get("retry_after_seconds")
        )
        self.status_code = status_code
        self.error_type = str(fields.get("type", "internal_error"))
        self.retryable = bool(fields.get("retryable", False))


def _json(fields: dict[str, Any]) -> str:
    return json_object(fields).decode()


def pack(event: ResponseEvent) -> str:
    if type(event) is TextDelta:
        return "d" + event.text
    if type(event) is ReasoningDelta:
        return "r" + event.text
    if isinstance(event, StreamStarted):
        started = {"id": event.stream_id, "model": event.model}
        if event.deployment is not None:
            started["deployment"] = event.deployment
        return "s" + _json(started)
    if isinstance(event, StreamEnded):
        return "e" + _json(
            {
                "finish_reason": event.finish_reason,
                "usage": event.usage.as_dict() if event.usage else None,
                "metrics": event.metrics.as_dict(),
            }
        )
    assert isinstance(event, StreamFailed)
    return "f" + _json({"status": event.error.status_code, "error": event.error.as_dict()})


def unpack(packed: str) -> ResponseEvent:
    tag, body = packed[:1], packed[1:]
    if tag == "d":
        return TextDelta(body)
    if tag == "r":
        return ReasoningDelta(body)
    fields = json.loads(body)
    if tag == "s":
        return StreamStarted(fields["id"], fields["model"], fields.get("deployment"))
    if tag == "e":
        usage = fields["usage"]
        return StreamEnded(
            fields["finish_reason"],
            Usage(**usage) if usage is not None else None,
            StreamMetrics(**fields["metrics"]),
        )
    if tag == "f":
        return StreamFailed(StoredError(fields["error"], int(fields["status"])))
    raise ValueError(f"not a stored event: {packed[:20]!r}")


def pack_batch(packed: list[str]) -> str:
    return json.dumps(packed)


def unpack_batch(stored: bytes | str) -> list[ResponseEvent]:
    return [unpack(item) for item in json.loads(stored)]


def is_terminal(event: ResponseEvent) -> bool:
    """End and error events are always a stream's last (`service.events`)."""
    return isinstance(event, StreamEnded | StreamFailed)
