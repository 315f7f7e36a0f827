"""Bodies of OpenAI's own APIs, read as little as the service needs (issue #8).

`/v1/chat/completions` and `/v1/responses` relay the client's body as it is, so every parameter
reaches the upstream untouched, including ones the service has never heard of: the upstream
decides what it accepts. Only what the service itself acts on is read and checked here:

- `model` (a non-empty string, or absent for the default) and `stream` (a boolean);
- chat completions: `messages`, which must be a non-empty list (as OpenAI requires);
- what the limits bound (`service.limits`): the number of messages (or `input` items), the
  characters of their text, and the output token cap the client asked for (`max_tokens`,
  `max_completion_tokens`, `max_output_tokens`).

A wrong body is a 400 naming the parameter (OpenAI answers every invalid request with 400, and
the SDKs raise `BadRequestError` for it).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from service.domain import PassthroughRequest, RequestSize
from service.errors import InvalidRequest

_MAX_MODEL_CHARS = 200


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, status_code=400, param=param)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError as error:  # UnicodeDecodeError is a ValueError too
        raise _invalid(f"the request body is not valid JSON: {error}") from None
    if not isinstance(decoded, dict):
        raise _invalid("the request body must be a JSON object")
    return decoded


def _model_and_stream(body: dict[str, Any]) -> tuple[str | None, bool]:
    model = body.get("model")
    if model is not None and (
        not isinstance(model, str) or not model or len(model) > _MAX_MODEL_CHARS
    ):
        raise _invalid(f"model: must be a string of 1 to {_MAX_MODEL_CHARS} characters", "model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid("stream: must be a boolean", "stream")
    return model, stream


def _text_chars(content: object) -> int:
    """Characters of text in a content value: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(part["text"])
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def _item_chars(item: object) -> int:
    """Characters of one message or input item: its content, and the strings a tool call or a
    tool result carries (`arguments`, `output`)."""
    if not isinstance(item, dict):
        return 0
    chars = _text_chars(item.get("content")) + _text_chars(item.get("output"))
    arguments = item.get("arguments")
    if isinstance(arguments, str):
        chars += len(arguments)
    for call in item.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            chars += len(function["arguments"])
    return chars


def _as_count(value: object) -> int | None:
    """A token count as the limits compare it: a float rounded up (some servers accept `1e9`),
    infinity as the largest count; anything else (a string, NaN) is the upstream's to refuse."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value
    if math.isnan(value):
        return None
    return sys.maxsize if math.isinf(value) else math.ceil(value)


def _largest_count(body: dict[str, Any], *names: str) -> tuple[int | None, str]:
    """The largest count among the fields `names`, and that field's name."""
    largest: int | None = None
    field = names[0]
    for name in names:
        count = _as_count(body.get(name))
        if count is not None and (largest is None or count > largest):
            largest, field = count, name
    return largest, field


def parse_chat_completions(body: bytes) -> PassthroughRequest:
    decoded = _decode(body)
    model, stream = _model_and_stream(decoded)
    messages = decoded.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: a non-empty list of messages is required", "messages")
    max_tokens, max_tokens_field = _largest_count(decoded, "max_completion_tokens", "max_tokens")
    size = RequestSize(
        messages=len(messages),
        input_chars=sum(_item_chars(message) for message in messages),
        max_tokens=max_tokens,
        max_tokens_field=max_tokens_field,
    )
    return PassthroughRequest("chat.completions", decoded, model, stream, size)


def parse_responses(body: bytes) -> PassthroughRequest:
    decoded = _decode(body)
    model, stream = _model_and_stream(decoded)
    # `input` may be absent (a stored prompt, or `previous_response_id` alone): the upstream
    # decides whether the request is complete.
    items = decoded.get("input")
    if isinstance(items, str):
        count, chars = 1, len(items)
    elif isinstance(items, list):
        count, chars = len(items), sum(_item_chars(item) for item in items)
    else:
        count, chars = 0, 0
    chars += _text_chars(decoded.get("instructions"))
    max_tokens, _ = _largest_count(decoded, "max_output_tokens")
    size = RequestSize(
        messages=count,
        input_chars=chars,
        max_tokens=max_tokens,
        messages_field="input",
        max_tokens_field="max_output_tokens",
    )
    return PassthroughRequest("responses", decoded, model, stream, size)
