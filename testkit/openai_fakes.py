"""Upstream bodies for the `/v1` tests, written from the openai-python types (not from the
service's demo model, so the two are checked against each other and against the SDK).

- Chat completions with tool call fragments, and with several choices (`n`).
- The Responses API's streamed event sequence for a text answer, as
  `src/openai/types/responses/` defines each event: `response.created`,
  `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
  `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`,
  `response.output_item.done`, `response.completed` (with usage), each with its SSE `event:`
  line and a `sequence_number` from 0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from testkit.fake_upstream import DONE

MODEL = "gpt-4o-mini-2024-07-18"


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    prefix = f"event: {event}\n".encode() if event else b""
    return prefix + b"data: " + json.dumps(payload).encode() + b"\n\n"


def chat_chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return sse(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1763700000,
            "model": MODEL,
            "system_fingerprint": "fp_fake",
            "choices": choices,
            **extra,
        }
    )


def choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> bytes:
    return chat_chunk(
        [],
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    )


def openai_pieces(tokens: Sequence[str]) -> list[bytes]:
    """A streamed answer byte for byte as OpenAI sends it when usage is asked for: compact
    JSON, `"usage":null` in every chunk but the last, `service_tier` and the `obfuscation`
    padding field; one event per token."""

    def chunk(fields: dict[str, Any], padding: str = "") -> bytes:
        payload = {
            "id": "chatcmpl-BfakeOpenAIid",
            "object": "chat.completion.chunk",
            "created": 1763700000,
            "model": MODEL,
            "service_tier": "default",
            "system_fingerprint": "fp_34a54ae93c",
            **fields,
        }
        if padding:
            payload["obfuscation"] = padding
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    pieces = [
        chunk(
            {
                "choices": [choice(0, {"role": "assistant", "content": "", "refusal": None})],
                "usage": None,
            },
            "x7",
        )
    ]
    pieces += [
        chunk(
            {"choices": [choice(0, {"content": token})], "usage": None}, "Qz4"[: 1 + len(token) % 3]
        )
        for token in tokens
    ]
    pieces.append(chunk({"choices": [choice(0, {}, "stop")], "usage": None}, "kP"))
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": len(tokens),
        "total_tokens": 7 + len(tokens),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    pieces += [chunk({"choices": [], "usage": usage}, "m"), DONE]
    return pieces


def choices_pieces(answers: Sequence[Sequence[str]]) -> list[bytes]:
    """`n = len(answers)` choices streamed interleaved, one chunk per token and choice."""
    pieces = [
        chat_chunk([choice(i, {"role": "assistant", "content": ""})]) for i in range(len(answers))
    ]
    for position in range(max(len(tokens) for tokens in answers)):
        for index, tokens in enumerate(answers):
            if position < len(tokens):
                pieces.append(chat_chunk([choice(index, {"content": tokens[position]})]))
    pieces += [chat_chunk([choice(i, {}, "stop")]) for i in range(len(answers))]
    pieces += [usage_chunk(9, sum(len(tokens) for tokens in answers)), DONE]
    return pieces


def tool_call_pieces(call_id: str, name: str, argument_fragments: Sequence[str]) -> list[bytes]:
    """One function call, its arguments streamed in fragments, as OpenAI streams tool calls."""
    pieces = [
        chat_chunk(
            [
                choice(
                    0,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ],
                    },
                )
            ]
        )
    ]
    pieces += [
        chat_chunk([choice(0, {"tool_calls": [{"index": 0, "function": {"arguments": part}}]})])
        for part in argument_fragments
    ]
    pieces += [chat_chunk([choice(0, {}, "tool_calls")]), usage_chunk(40, 12), DONE]
    return pieces


def chat_completion_body(text: str, *, finish_reason: str = "stop") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1763700000,
            "model": MODEL,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    ).encode()


def _response(
    status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": 1763700000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def responses_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def responses_events(tokens: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The `(event name, payload)` sequence of a streamed text answer."""
    item_id = "msg_fake"
    text = "".join(tokens)
    part_done = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    message_done = {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part_done],
    }
    located = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response("in_progress", [], None)}),
        ("response.in_progress", {"response": _response("in_progress", [], None)}),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
        ),
        (
            "response.content_part.added",
            {**located, "part": {"type": "output_text", "text": "", "annotations": []}},
        ),
    ]
    events += [
        ("response.output_text.delta", {**located, "delta": token, "logprobs": []})
        for token in tokens
    ]
    events += [
        ("response.output_text.done", {**located, "text": text, "logprobs": []}),
        ("response.content_part.done", {**located, "part": part_done}),
        ("response.output_item.done", {"output_index": 0, "item": message_done}),
        (
            "response.completed",
            {"response": _response("completed", [message_done], responses_usage(11, len(tokens)))},
        ),
    ]
    return [
        (name, {"type": name, **fields, "sequence_number": number})
        for number, (name, fields) in enumerate(events)
    ]


def responses_pieces(tokens: Sequence[str]) -> list[bytes]:
    """The sequence as SSE, one event per write (no `[DONE]`: Responses streams end after
    `response.completed`)."""
    return [sse(payload, name) for name, payload in responses_events(tokens)]


def response_body(text: str) -> bytes:
    message = {
        "id": "msg_fake",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    return json.dumps(_response("completed", [message], responses_usage(11, 2))).encode()
