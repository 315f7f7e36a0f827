"""The demo model's answers in OpenAI's own shapes, for the `/v1` routes (issue #8).

Chat completions: `chat.completion.chunk` objects (the role chunk, one chunk per token and
choice, the finish chunk, the usage chunk) or one `chat.completion`. Responses: the event
sequence of a text answer as the openai-python types define it
(`src/openai/types/responses/`: `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta`...,
`response.output_text.done`, `response.content_part.done`, `response.output_item.done`, then
`response.completed`, or `response.incomplete` when `max_output_tokens` cut the answer), or one
`response` object. Pure builders of JSON bytes; the demo model paces them.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from service.events import Usage


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _text_of(content: object) -> str:
    """The text of a message's content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def question_of(body: dict[str, Any]) -> str:
    """The last user message of a chat completions (`messages`) or Responses (`input`) body."""
    items = body.get("messages", body.get("input"))
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                return _text_of(item.get("content"))
    return ""


class ChatShapes:
    """The chunks (or the whole completion) of one chat completion with `choices` choices."""

    def __init__(self, model: str, choices: int) -> None:
        self.id = "chatcmpl-demo" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model
        self.choices = choices

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _dump(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": choices,
                **extra,
            }
        )

    def _deltas(self, delta: dict[str, Any], finish_reason: str | None) -> list[bytes]:
        return [
            self._chunk(
                [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            )
            for index in range(self.choices)
        ]

    def role(self) -> list[bytes]:
        return self._deltas({"role": "assistant", "content": "", "refusal": None}, None)

    def text(self, token: str) -> list[bytes]:
        return self._deltas({"content": token}, None)

    def finish(self, reason: str) -> list[bytes]:
        return self._deltas({}, reason)

    def usage(self, usage: Usage) -> bytes:
        return self._chunk([], usage=chat_usage(usage))

    def completion(self, text: str, reason: str, usage: Usage) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": [],
        }
        return _dump(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": index, "message": message, "logprobs": None, "finish_reason": reason}
                    for index in range(self.choices)
                ],
                "usage": chat_usage(usage),
            }
        )


def chat_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class ResponseShapes:
    """The events (or the whole object) of one Responses API answer: a single text message.
    Each event is `(SSE event name, payload)`, numbered by `sequence_number` from 0."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.id = "resp_demo" + uuid.uuid4().hex
        self.item_id = "msg_demo" + uuid.uuid4().hex
        self.created_at = int(time.time())
        self.model = model
        self.body = body
        self.text = ""
        self._sequence = 0

    def _event(self, kind: str, **fields: Any) -> tuple[bytes, bytes]:
        payload = _dump({"type": kind, **fields, "sequence_number": self._sequence})
        self._sequence += 1
        return kind.encode(), payload

    def _part(self) -> dict[str, Any]:
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}

    def _item(self, status: str) -> dict[str, Any]:
        content = [self._part()] if status != "in_progress" else []
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def response(
        self, status: str, usage: Usage | None = None, incomplete_reason: str | None = None
    ) -> dict[str, Any]:
        """The `response` object; its output is the message so far, once it is over."""
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": (
                {"reason": incomplete_reason} if incomplete_reason is not None else None
            ),
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model,
            "output": [] if status == "in_progress" else [self._item(status)],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []),
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": responses_usage(usage) if usage is not None else None,
            "user": None,
            "metadata": body.get("metadata", {}),
        }

    def opening(self) -> list[tuple[bytes, bytes]]:
        """Everything before the first text delta."""
        return [
            self._event("response.created", response=self.response("in_progress")),
            self._event("response.in_progress", response=self.response("in_progress")),
            self._event(
                "response.output_item.added", output_index=0, item=self._item("in_progress")
            ),
            self._event(
                "response.content_part.added",
                item_id=self.item_id,
                output_index=0,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            ),
        ]

    def delta(self, token: str) -> tuple[bytes, bytes]:
        self.text += token
        return self._event(
            "response.output_text.delta",
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            delta=token,
            logprobs=[],
        )

    def closing(self, usage: Usage, incomplete_reason: str | None) -> list[tuple[bytes, bytes]]:
        """Everything after the last text delta: `response.completed`, or
        `response.incomplete` when the answer was cut."""
        status = "completed" if incomplete_reason is None else "incomplete"
        located = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return [
            self._event("response.output_text.done", **located, text=self.text, logprobs=[]),
            self._event("response.content_part.done", **located, part=self._part()),
            self._event("response.output_item.done", output_index=0, item=self._item(status)),
            self._event(
                f"response.{status}", response=self.response(status, usage, incomplete_reason)
            ),
        ]

    def whole(self, text: str, usage: Usage, incomplete_reason: str | None) -> bytes:
        self.text = text
        status = "completed" if incomplete_reason is None else "incomplete"
        return _dump(self.response(status, usage, incomplete_reason))


def responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }
