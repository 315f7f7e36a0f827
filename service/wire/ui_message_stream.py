"""The Vercel AI SDK's UI message stream, protocol v1: what `useChat` (`DefaultChatTransport`)
reads (https://ai-sdk.dev/docs/ai-sdk-ui/stream-protocol#ui-message-stream-protocol).

Server-Sent Events whose `data:` is one JSON chunk each, announced by the response header
`x-vercel-ai-ui-message-stream: v1`:

    start {messageId}  start-step                     (the stream's start event)
    reasoning-start {id}  reasoning-delta {id, delta}...  reasoning-end {id}   (if any)
    text-start {id}  text-delta {id, delta}...  text-end {id}
    finish-step  finish {finishReason, messageMetadata: {usage, metrics...}}
    error {errorText}                                 (instead of finish-step/finish)
    data: [DONE]

Only chunk types and fields that the schemas of `ai` 5, 6 and 7 all accept are sent (their
`uiMessageChunkSchema`; 5.x's objects are strict, so no extra field may appear), and the finish
reason is spelt as the SDK spells it. The message id is the service's stream id, so a message in
the UI names its log line. Heartbeats are SSE comments, which the SDK's parser skips.
"""

from __future__ import annotations

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
from service.wire.payloads import json_object, json_string
from service.wire.sse import DONE, HEARTBEAT

if TYPE_CHECKING:
    from service.settings import Settings

MEDIA_TYPE = "text/event-stream"
HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
TEXT_ID = b"text-1"
REASONING_ID = b"reasoning-1"

# OpenAI's finish reasons in the SDK's `FinishReason` spelling; anything else is `other`.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}


def chunk(fields: dict[str, Any]) -> bytes:
    """One UI message chunk as an SSE event."""
    return b"data: " + json_object(fields) + b"\n\n"


def delta_chunk(kind: bytes, part_id: bytes, text: str) -> bytes:
    # Hot path: one per token, so the object is assembled rather than dumped.
    return (
        b'data: {"type":"'
        + kind
        + b'-delta","id":"'
        + part_id
        + b'","delta":'
        + json_string(text)
        + b"}\n\n"
    )


def part_boundary(kind: bytes, edge: bytes, part_id: bytes) -> bytes:
    return b'data: {"type":"' + kind + b"-" + edge + b'","id":"' + part_id + b'"}\n\n'


def finish_metadata(event: StreamEnded) -> dict[str, Any]:
    """`messageMetadata` of the finish chunk: usage and the stream's own measurements."""
    return {
        "finishReason": event.finish_reason,
        "usage": event.usage.as_dict() if event.usage else None,
        **event.metrics.as_dict(),
    }


class UIMessageStreamEncoder:
    """Opens and closes the text and reasoning parts around their deltas; the chunks are the
    pure functions above."""

    media_type = MEDIA_TYPE
    heartbeat: bytes | None = HEARTBEAT

    def __init__(self) -> None:
        self._open: bytes | None = None  # b"text" or b"reasoning" while a part is open

    def _switch_to(self, kind: bytes | None) -> bytes:
        """End the open part unless it is `kind`, then start `kind` (None: end only)."""
        if self._open == kind:
            return b""
        out = b""
        if self._open is not None:
            out = part_boundary(self._open, b"end", _part_id(self._open))
        self._open = kind
        if kind is not None:
            out += part_boundary(kind, b"start", _part_id(kind))
        return out

    def encode(self, event: ResponseEvent) -> bytes:
        if type(event) is TextDelta:
            opening = b"" if self._open == b"text" else self._switch_to(b"text")
            return opening + delta_chunk(b"text", TEXT_ID, event.text)
        if type(event) is ReasoningDelta:
            opening = self._switch_to(b"reasoning")
            return opening + delta_chunk(b"reasoning", REASONING_ID, event.text)
        if isinstance(event, StreamStarted):
            start: dict[str, Any] = {"type": "start", "messageId": event.stream_id}
            if event.deployment is not None:  # with UPSTREAMS: the deployment that answers
                start["messageMetadata"] = {"deployment": event.deployment}
            return chunk(start) + chunk({"type": "start-step"})
        if isinstance(event, StreamEnded):
            return (
                self._switch_to(None)
                + chunk({"type": "finish-step"})
                + chunk(
                    {
                        "type": "finish",
                        "finishReason": FINISH_REASONS.get(event.finish_reason, "other"),
                        "messageMetadata": finish_metadata(event),
                    }
                )
            )
        assert isinstance(event, StreamFailed)
        return self._switch_to(None) + chunk({"type": "error", "errorText": event.error.message})

    def close(self) -> bytes:
        return DONE


def _part_id(kind: bytes) -> bytes:
    return TEXT_ID if kind == b"text" else REASONING_ID


def _encoder(settings: Settings, stream_id: str) -> UIMessageStreamEncoder:
    return UIMessageStreamEncoder()


FORMAT = WireFormat(
    name="ui-message-stream",
    media_type=MEDIA_TYPE,
    make_encoder=_encoder,
    openapi={
        "itemSchema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": "one UI message chunk as JSON (start, text-delta, finish, "
                    "error, ...), or [DONE] last",
                }
            },
        }
    },
    headers=HEADERS,
)
