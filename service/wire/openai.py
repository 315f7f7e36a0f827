"""OpenAI's own wire formats, for the `/v1` routes (issue #8): the upstream's events, relayed.

Streamed, each `Relayed` event goes out as the upstream wrote it: `data: <its bytes>`, after
`event: <name>` when the upstream named it (the Responses API does), so the encoder costs two
concatenations per token and never parses or re-encodes JSON. A chat completions stream ends
with `data: [DONE]`; a Responses stream ends after its terminal event, as OpenAI's does.

An error after the first byte is one last event that the OpenAI SDKs raise as `APIError` (they
raise on any event whose JSON has an `error` object), and the stream ends there, without
`[DONE]`:

    data: {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

and for Responses the same object inside the API's own `error` event, so that clients that read
the event's fields (`code`, `message`) find them too:

    event: error
    data: {"type": "error", "code", "message", "param", "sequence_number": n, "error": {...}}

Not streamed, the one `Relayed` event is the whole JSON answer. The heartbeat is an SSE comment,
which every SSE parser skips
(https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream).
"""

from __future__ import annotations

from typing import Any

from service.events import Relayed, ResponseEvent, StreamFailed
from service.wire.payloads import error_body, json_object
from service.wire.sse import DONE, HEARTBEAT

SSE_MEDIA_TYPE = "text/event-stream"
JSON_MEDIA_TYPE = "application/json"


class RelayedEventsEncoder:
    """A streamed chat completion (`done_marker`) or Responses answer (`named_errors`)."""

    media_type = SSE_MEDIA_TYPE
    heartbeat: bytes | None = HEARTBEAT

    def __init__(self, *, done_marker: bool, named_errors: bool) -> None:
        self._done_marker = done_marker
        self._named_errors = named_errors
        self._relayed = 0
        self._failed = False

    def encode(self, event: ResponseEvent) -> bytes:
        if type(event) is Relayed:
            if not event.forward:
                return b""
            self._relayed += 1
            # A payload the upstream spread over several `data:` lines was joined with LF.
            data = b"data: " + event.data.replace(b"\n", b"\ndata: ") + b"\n\n"
            return data if event.event is None else b"event: " + event.event + b"\n" + data
        if isinstance(event, StreamFailed):
            self._failed = True
            error = event.error.as_openai_dict()
            if not self._named_errors:
                return b"data: " + error_body(error) + b"\n\n"
            fields: dict[str, Any] = {
                "type": "error",
                "code": error["code"],
                "message": error["message"],
                "param": error["param"],
                # The upstream numbers its events from 0; this one follows those relayed.
                "sequence_number": self._relayed,
                "error": error,
            }
            return b"event: error\ndata: " + json_object(fields) + b"\n\n"
        return b""  # start and end are the service's own: OpenAI's streams have neither

    def close(self) -> bytes:
        return DONE if self._done_marker and not self._failed else b""


class RelayedAnswerEncoder:
    """A non-streamed answer: the upstream's JSON body, as it is."""

    media_type = JSON_MEDIA_TYPE
    heartbeat: bytes | None = None  # any byte before the JSON would break it

    def __init__(self) -> None:
        self._sent = False

    def encode(self, event: ResponseEvent) -> bytes:
        if type(event) is Relayed:
            self._sent = True
            return event.data
        if isinstance(event, StreamFailed) and not self._sent:
            # Only when the response was cut after its headers but before the answer.
            return error_body(event.error.as_openai_dict())
        return b""

    def close(self) -> bytes:
        return b""
