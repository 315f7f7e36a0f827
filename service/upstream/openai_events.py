"""What the service reads from an OpenAI API's own events, to relay them untouched (issue #8).

`/v1/chat/completions` and `/v1/responses` pass the upstream's events to the client byte for
byte, so each one becomes a `Relayed` carrying its bytes plus the few facts the metrics need:
whether it carries model output (the first one's time is the time to first token), a finish
reason, and usage. Nothing else is read, and nothing is re-encoded.

- Chat completions (https://platform.openai.com/docs/api-reference/chat-streaming): a chunk is
  decoded into the few fields the metrics need (its choices' deltas and finish reasons, its
  usage), the rest skipped unread; the output may be in any choice, and `choices` is empty in
  Azure's first chunk and in the usage chunk. The usage chunk is the one event that may be
  dropped: the service always asks for usage, and a client that did not ask
  (`stream_options.include_usage`) must not get it.
- Responses (https://platform.openai.com/docs/api-reference/responses-streaming): the SSE event
  name says what an event is, so only the terminal events (`response.completed`,
  `response.incomplete`, `response.failed`) and `error` are parsed; an unnamed event (a server
  that sends no `event:` line) is parsed for its `type`.

The native routes translate rather than relay: `chunk_events` reads a chat chunk's text,
reasoning, finish reason and usage as upstream events, decoded by msgspec into the few fields
it needs (whatever the JSON's layout).

An error the upstream reports inside a stream becomes a `Failed`, with its message redacted
(`service.upstream.redaction`). Pure functions, no SDK: `service.upstream.openai_chat` and the demo
model both use them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

import msgspec

from service.domain import OpenAIApi
from service.errors import ServiceError, UpstreamUnavailable
from service.events import (
    Failed,
    Finished,
    ReasoningDelta,
    Relayed,
    TextDelta,
    UpstreamEvent,
    Usage,
    UsageReported,
)
from service.upstream.redaction import safe_message

# Responses API events that carry model output: each counts as a token for the metrics.
OUTPUT_EVENTS = frozenset(
    {
        b"response.output_text.delta",
        b"response.refusal.delta",
        b"response.function_call_arguments.delta",
        b"response.custom_tool_call_input.delta",
        b"response.reasoning_text.delta",
        b"response.reasoning_summary_text.delta",
        b"response.audio.transcript.delta",
    }
)
# The last event of a Responses stream, with the whole response (its usage and status).
TERMINAL_EVENTS = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})
ERROR_EVENT = b"error"


def mid_stream_error(body: object, secrets: Iterable[str]) -> ServiceError:
    """The upstream reported an error inside a stream that had started."""
    message = safe_message(body, secrets=secrets, fallback="the upstream reported an error")
    return UpstreamUnavailable(f"the upstream failed mid-stream: {message}")


def _unreadable() -> Failed:
    return Failed(UpstreamUnavailable("the upstream sent an unreadable event"))


def parse_json(payload: bytes) -> Any:
    """The JSON value in `payload`, parsed by msgspec (a fifth of `json.loads`'s CPU for a chat
    chunk); the standard library for a lone surrogate escape (`\\ud83d`, half an emoji a model
    can emit), which msgspec refuses. Raises `ValueError` when neither can read it."""
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return json.loads(payload)


def object_of(payload: bytes, secrets: Iterable[str]) -> dict[str, Any] | Failed:
    """The JSON object in `payload`; a `Failed` when it is none, or when it is an error
    (`{"error": {...}}`, chat completions' way to fail inside a stream)."""
    try:
        decoded = parse_json(payload)
    except ValueError:
        return _unreadable()
    if not isinstance(decoded, dict):
        return _unreadable()
    if decoded.get("error"):
        return Failed(mid_stream_error(decoded["error"], secrets))
    return decoded


def _count(counts: dict[str, Any], name: str) -> int:
    value = counts.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage(usage: dict[str, Any], prompt: str, completion: str, details: str) -> Usage:
    prompt_tokens, completion_tokens = _count(usage, prompt), _count(usage, completion)
    breakdown = usage.get(details)
    return Usage(
        prompt_tokens,
        completion_tokens,
        _count(usage, "total_tokens") or prompt_tokens + completion_tokens,
        _count(breakdown, "reasoning_tokens") if isinstance(breakdown, dict) else 0,
    )


def usage_of(usage: dict[str, Any]) -> Usage:
    """Chat completions' `usage` object."""
    return _usage(usage, "prompt_tokens", "completion_tokens", "completion_tokens_details")


def _responses_usage_of(usage: dict[str, Any]) -> Usage:
    """The Responses API's `usage` object."""
    return _usage(usage, "input_tokens", "output_tokens", "output_tokens_details")


def _delta_has_output(delta: dict[str, Any]) -> bool:
    """Anything but the role, non-empty: text, refusal, tool call fragments, reasoning."""
    if delta.get("content"):
        return True  # the common case, answered without walking the delta
    return any(value for key, value in delta.items() if key != "role")


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    # vLLM and DeepSeek stream `reasoning_content`; newer vLLM and OpenRouter `reasoning`.
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """The fields of a `chat.completion.chunk` the native routes read, in the types OpenAI
    gives them; every other field is skipped unread."""

    choices: list[_Choice] = []
    usage: dict[str, Any] | None = None
    error: Any = None


_CHUNK = msgspec.json.Decoder(_Chunk)


def chunk_events(payload: bytes, secrets: Iterable[str]) -> list[UpstreamEvent]:
    """What the native routes take from one `chat.completion.chunk` payload: its first
    choice's reasoning and text, its finish reason, and the usage, as upstream events; a
    `Failed` alone for an error or an unreadable chunk. Only the first choice is streamed (the
    native routes never ask for `n` > 1); `choices` may be empty (Azure's first chunk, the
    usage chunk) or carry no `delta` (Azure's asynchronous filter).

    Decoded straight into the fields it needs (`_Chunk`: msgspec skips the rest in C, half the
    instructions of parsing the whole chunk, once per token: issue #16); a chunk of any other
    shape (a field of another type, an error, JSON msgspec refuses) is read leniently by
    `chunk_events_lenient`, which both paths agree with (tests/test_openai_shapes.py)."""
    try:
        chunk = _CHUNK.decode(payload)
    except msgspec.MsgspecError:
        return chunk_events_lenient(payload, secrets)
    if chunk.error:
        return chunk_events_lenient(payload, secrets)
    events: list[UpstreamEvent] = []
    for choice in chunk.choices:
        if choice.index != 0:
            continue
        delta = choice.delta
        if delta is not None:
            thought = delta.reasoning_content or delta.reasoning
            if thought:
                events.append(ReasoningDelta(thought))
            text = delta.content or delta.refusal
            if text:
                events.append(TextDelta(text))
        if choice.finish_reason:
            events.append(Finished(choice.finish_reason))
    if chunk.usage is not None:
        events.append(UsageReported(usage_of(chunk.usage)))
    return events


def chunk_events_lenient(payload: bytes, secrets: Iterable[str]) -> list[UpstreamEvent]:
    """`chunk_events` for a chunk of any shape: whatever is not where and what OpenAI puts it
    is ignored, an unreadable chunk or an error is a `Failed`."""
    chunk = object_of(payload, secrets)
    if isinstance(chunk, Failed):
        return [chunk]
    events: list[UpstreamEvent] = []
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if thought and isinstance(thought, str):
                events.append(ReasoningDelta(thought))
            text = delta.get("content") or delta.get("refusal")
            if text and isinstance(text, str):
                events.append(TextDelta(text))
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):
            events.append(Finished(reason))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        events.append(UsageReported(usage_of(usage)))
    return events


class _RelayedChoice(msgspec.Struct):
    delta: dict[str, Any] | None = None
    finish_reason: str | None = None


class _RelayedChunk(msgspec.Struct):
    """What the metrics need of a relayed chat chunk; every other field is skipped unread."""

    choices: list[_RelayedChoice] = []
    usage: dict[str, Any] | None = None
    error: Any = None


_RELAYED_CHUNK = msgspec.json.Decoder(_RelayedChunk)


def chat_chunk(
    name: bytes | None, payload: bytes, *, forward_usage: bool, secrets: Iterable[str]
) -> Relayed | Failed:
    """One `chat.completion.chunk` payload (chat completions name no events). Decoded into
    the few fields it needs, the rest skipped in C (once per token, issue #16); a chunk of any
    other shape, or an error, is parsed whole (`parsed_chat_chunk`), which reads the same."""
    try:
        chunk = _RELAYED_CHUNK.decode(payload)
    except msgspec.MsgspecError:
        return parsed_chat_chunk(payload, forward_usage=forward_usage, secrets=secrets)
    if chunk.error:
        return parsed_chat_chunk(payload, forward_usage=forward_usage, secrets=secrets)
    output = False
    finish_reason = None
    for choice in chunk.choices:
        if not output and choice.delta is not None:
            output = _delta_has_output(choice.delta)
        if choice.finish_reason:
            finish_reason = choice.finish_reason
    usage = usage_of(chunk.usage) if chunk.usage is not None else None
    forward = forward_usage or usage is None or bool(chunk.choices)
    return Relayed(payload, None, output, finish_reason, usage, forward)


def parsed_chat_chunk(
    payload: bytes, *, forward_usage: bool, secrets: Iterable[str]
) -> Relayed | Failed:
    """`chat_chunk` the slow way: the whole chunk parsed."""
    chunk = object_of(payload, secrets)
    if isinstance(chunk, Failed):
        return chunk
    output = False
    finish_reason = None
    choices = chunk.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if not output and isinstance(delta, dict):
                output = _delta_has_output(delta)
            reason = choice.get("finish_reason")
            if reason and isinstance(reason, str):
                finish_reason = reason
    usage_body = chunk.get("usage")
    usage = usage_of(usage_body) if isinstance(usage_body, dict) else None
    # Only the usage chunk itself (no choices) is held back; usage a server attaches to a
    # chunk with choices goes out as it is.
    forward = forward_usage or usage is None or bool(choices)
    return Relayed(payload, None, output, finish_reason, usage, forward)


def chat_completion(body: bytes, *, secrets: Iterable[str]) -> Relayed | Failed:
    """A whole `chat.completion` (not streamed): the answer, all at once."""
    completion = object_of(body, secrets)
    if isinstance(completion, Failed):
        return completion
    finish_reason = None
    choices = completion.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        finish_reason = reason if isinstance(reason, str) else None
    usage_body = completion.get("usage")
    usage = usage_of(usage_body) if isinstance(usage_body, dict) else None
    return Relayed(body, None, True, finish_reason, usage)


def _response_facts(response: object) -> tuple[str | None, Usage | None]:
    """(finish reason, usage) of a Responses `response` object: the reason an incomplete
    response stopped (`max_output_tokens`, `content_filter`), else its status."""
    if not isinstance(response, dict):
        return None, None
    usage_body = response.get("usage")
    usage = _responses_usage_of(usage_body) if isinstance(usage_body, dict) else None
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    status = response.get("status")
    if isinstance(reason, str) and reason:
        return reason, usage
    return (status if isinstance(status, str) else None), usage


def responses_event(
    name: bytes | None, payload: bytes, *, secrets: Iterable[str]
) -> Relayed | Failed:
    """One Responses API stream event, named by its SSE `event:` line when it has one."""
    kind = name
    parsed: object = None
    if kind is None or kind in TERMINAL_EVENTS or kind == ERROR_EVENT:
        parsed = object_of(payload, secrets)
        if isinstance(parsed, Failed):
            return parsed
        if kind is None:
            kind_text = parsed.get("type")
            kind = kind_text.encode() if isinstance(kind_text, str) else b""
    if kind in OUTPUT_EVENTS:
        return Relayed(payload, name, output=True)
    if kind == ERROR_EVENT:
        # `{"type": "error", "code", "message", "param"}`: the message is at the top level.
        return Failed(mid_stream_error(parsed, secrets))
    if kind in TERMINAL_EVENTS:
        assert isinstance(parsed, dict)
        finish_reason, usage = _response_facts(parsed.get("response"))
        # Never None: a terminal event finishes the stream whatever its response says.
        finish_reason = finish_reason or kind.decode(errors="replace").removeprefix("response.")
        return Relayed(payload, name, False, finish_reason, usage)
    return Relayed(payload, name)


def response_body(body: bytes, *, secrets: Iterable[str]) -> Relayed | Failed:
    """A whole `response` object (not streamed)."""
    response = object_of(body, secrets)
    if isinstance(response, Failed):
        return response
    finish_reason, usage = _response_facts(response)
    return Relayed(body, None, True, finish_reason, usage)


def asks_for_usage(body: dict[str, Any]) -> bool:
    """Whether a chat completions body asks for the usage chunk
    (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


EventDecoder = Callable[[bytes | None, bytes], Relayed | Failed]


class AnswerDecoder(Protocol):
    def __call__(self, body: bytes, *, secrets: Iterable[str]) -> Relayed | Failed: ...


def event_decoder(api: OpenAIApi, forward_usage: bool, secrets: Iterable[str]) -> EventDecoder:
    """`(event name, payload) -> Relayed | Failed` for one stream of `api`."""
    if api == "chat.completions":
        return partial(chat_chunk, forward_usage=forward_usage, secrets=secrets)
    return partial(responses_event, secrets=secrets)


def answer_decoder(api: OpenAIApi) -> AnswerDecoder:
    """The decoder of a whole, non-streamed answer of `api`."""
    return chat_completion if api == "chat.completions" else response_body


def model_entry(model: str, owner: str) -> dict[str, Any]:
    """A `model` object for a model the upstream does not list itself."""
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


def models_of(body: bytes) -> list[dict[str, Any]]:
    """The `model` objects of a `GET /models` answer (`{"object": "list", "data": [...]}`),
    untouched; those without a string `id` are left out, and an unreadable list is empty."""
    try:
        listing = json.loads(body)
    except ValueError:
        return []
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return []
    return [model for model in data if isinstance(model, dict) and isinstance(model.get("id"), str)]
