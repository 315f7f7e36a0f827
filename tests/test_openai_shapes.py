"""The `/v1` relay's parts, alone: the shapes of what the fake upstream and the demo model send
(checked against the openai-python types), what the service reads from each upstream event,
and the bytes the encoders write."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from service.domain import PassthroughParams
from service.errors import UpstreamUnavailable
from service.events import (
    Failed,
    Finished,
    ReasoningDelta,
    Relayed,
    StreamEnded,
    StreamFailed,
    StreamMetrics,
    StreamStarted,
    TextDelta,
    Usage,
    UsageReported,
)
from service.upstream import openai_events
from service.upstream.demo import DemoUpstream
from service.upstream.sse_decoder import SSEDecoder
from service.wire.openai import RelayedAnswerEncoder, RelayedEventsEncoder
from testkit.fake_upstream import split_awkwardly
from testkit.openai_fakes import (
    chat_chunk,
    choice,
    openai_pieces,
    responses_events,
    responses_pieces,
    tool_call_pieces,
    usage_chunk,
)

STREAM_EVENT = TypeAdapter[Any](ResponseStreamEvent)
SECRET = "sk-upstream-0123456789abcdef"


def data_of(piece: bytes) -> bytes:
    return piece.split(b"data: ", 1)[1].rstrip(b"\n")


def test_fake_responses_sequence_matches_the_sdk_types() -> None:
    events = responses_events([" Hel", "lo"])
    names = [name for name, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    for number, (name, payload) in enumerate(events):
        parsed = STREAM_EVENT.validate_python(payload)
        assert parsed.type == name
        assert parsed.sequence_number == number


async def collect(upstream: DemoUpstream, params: PassthroughParams) -> list[Relayed]:
    events = [event async for batch in upstream.passthrough(params) for event in batch]
    assert all(isinstance(event, Relayed) for event in events)
    return [event for event in events if isinstance(event, Relayed)]


@pytest.fixture
def demo() -> DemoUpstream:
    return DemoUpstream(tokens_per_second=10_000, first_token_delay_seconds=0)


async def test_demo_responses_stream_is_the_sdk_sequence(demo: DemoUpstream) -> None:
    body = {"input": [{"role": "user", "content": "Hi there"}], "stream": True}
    events = await collect(demo, PassthroughParams("responses", body, "demo", True))
    parsed = [STREAM_EVENT.validate_python(json.loads(event.data)) for event in events]
    assert [event.event for event in events] == [p.type.encode() for p in parsed]
    assert [p.sequence_number for p in parsed] == list(range(len(parsed)))
    assert parsed[0].type == "response.created"
    assert parsed[-1].type == "response.completed"
    text = "".join(p.delta for p in parsed if p.type == "response.output_text.delta")
    assert text.startswith('You asked: "Hi there".')
    assert parsed[-1].response.output_text == text
    assert events[-1].usage is not None
    assert events[-1].usage.completion_tokens == sum(e.output for e in events)


async def test_demo_responses_cut_by_max_output_tokens_is_incomplete(demo: DemoUpstream) -> None:
    body = {"input": "Hi", "max_output_tokens": 3}
    (whole,) = await collect(demo, PassthroughParams("responses", body, "demo", False))
    response = Response.model_validate_json(whole.data)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert whole.finish_reason == "max_output_tokens"


async def test_demo_chat_chunks_are_sdk_chunks(demo: DemoUpstream) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "n": 2}
    events = await collect(demo, PassthroughParams("chat.completions", body, "demo", True))
    chunks = [ChatCompletionChunk.model_validate_json(event.data) for event in events]
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for item in chunk.choices:
            texts[item.index] += item.delta.content or ""
    assert texts[0] == texts[1]
    assert texts[0].startswith('You asked: "Hi".')
    # The usage chunk is made, and held back: the client did not ask for it.
    assert chunks[-1].usage is not None
    assert not events[-1].forward
    assert all(event.forward for event in events[:-1])


async def test_demo_chat_completion_is_an_sdk_completion(demo: DemoUpstream) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    (whole,) = await collect(demo, PassthroughParams("chat.completions", body, "demo", False))
    completion = ChatCompletion.model_validate_json(whole.data)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2


def compact_chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """A chunk's payload as OpenAI writes it: compact JSON, `usage: null`."""
    body = {"object": "chat.completion.chunk", "choices": choices, "usage": None, **extra}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# Every code point, lone surrogates included (a model can emit half an emoji as `\\ud83d`).
_any_text = st.text(st.characters(exclude_categories=()), min_size=1)


@settings(max_examples=300, deadline=None)
@given(_any_text, st.sampled_from(["compact", "spaced", "sorted", "ascii"]))
def test_native_route_reads_a_token_whatever_the_json_layout(text: str, layout: str) -> None:
    """OpenAI and vLLM write compact JSON, Azure sorts its keys, other servers add spaces or
    escape every non-ASCII character: the text read is the text sent, byte for byte."""
    chunk = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    surrogates = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    payload = json.dumps(
        chunk,
        separators=(", ", ": ") if layout == "spaced" else (",", ":"),
        sort_keys=layout == "sorted",
        ensure_ascii=layout == "ascii" or surrogates,  # a lone surrogate has no UTF-8 form
    ).encode()
    assert openai_events.chunk_events(payload, ()) == [TextDelta(text)]


def test_native_route_reads_each_kind_of_chunk() -> None:
    read = partial(openai_events.chunk_events, secrets=(SECRET,))
    assert read(data_of(openai_pieces([" w1"])[1])) == [TextDelta(" w1")]  # OpenAI's bytes
    assert read(compact_chunk([choice(0, {"role": "assistant", "content": ""})])) == []
    assert read(compact_chunk([choice(0, {"content": "x"}, "stop")])) == [
        TextDelta("x"),
        Finished("stop"),
    ]
    assert read(compact_chunk([choice(1, {"content": "second choice"})])) == []
    assert read(compact_chunk([choice(0, {"content": "x", "reasoning_content": "hm"})])) == [
        ReasoningDelta("hm"),
        TextDelta("x"),
    ]
    assert read(compact_chunk([choice(0, {"refusal": "no"})])) == [TextDelta("no")]
    assert read(compact_chunk([], usage={"prompt_tokens": 1, "completion_tokens": 2})) == [
        UsageReported(Usage(1, 2, 3))  # a missing total is the sum
    ]
    assert read(b'{"choices": 5, "usage": null}') == []  # an odd shape says nothing
    azure_filter = {"index": 0, "content_filter_offsets": {"check_offset": 1}}  # no delta
    assert read(compact_chunk([azure_filter])) == []
    failed = read(compact_chunk([], error={"message": f"bad key {SECRET}"}))
    assert len(failed) == 1
    assert isinstance(failed[0], Failed)
    assert SECRET not in failed[0].error.message
    for unreadable in (
        b'{"choices":[{"index":0,"delta":{"content":"\xff"},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]',
        b"[1, 2]",
    ):
        (event,) = read(unreadable)
        assert isinstance(event, Failed), unreadable


def test_chat_chunk_facts() -> None:
    def read(piece: bytes, forward_usage: bool = False) -> Relayed:
        event = openai_events.chat_chunk(
            None, data_of(piece), forward_usage=forward_usage, secrets=()
        )
        assert isinstance(event, Relayed)
        return event

    role = read(chat_chunk([choice(0, {"role": "assistant", "content": ""})]))
    assert not role.output
    assert role.finish_reason is None
    assert role.forward
    assert read(chat_chunk([choice(0, {"content": "x"})])).output
    assert read(chat_chunk([choice(0, {"refusal": "no"})])).output
    assert read(chat_chunk([choice(1, {"content": "second choice"})])).output
    tool_fragment = read(tool_call_pieces("call_1", "f", ['{"a"'])[1])
    assert tool_fragment.output
    assert read(chat_chunk([choice(0, {}, "tool_calls")])).finish_reason == "tool_calls"
    usage = read(usage_chunk(3, 4))
    assert usage.usage is not None
    assert usage.usage.total_tokens == 7
    assert not usage.forward
    assert read(usage_chunk(3, 4), forward_usage=True).forward
    # Azure's prompt filter results come in a chunk with no choices and no usage: relayed.
    azure_first = read(chat_chunk([], prompt_filter_results=[{"prompt_index": 0}]))
    assert azure_first.forward
    assert not azure_first.output


def test_chat_chunk_error_is_a_redacted_failure() -> None:
    payload = json.dumps({"error": {"message": f"overloaded; key {SECRET}"}}).encode()
    event = openai_events.chat_chunk(None, payload, forward_usage=False, secrets=(SECRET,))
    assert isinstance(event, Failed)
    assert "overloaded" in event.error.message
    assert SECRET not in event.error.message
    for broken in (b"{not json", b"[1, 2]"):
        failed = openai_events.chat_chunk(None, broken, forward_usage=False, secrets=())
        assert isinstance(failed, Failed)


def test_responses_event_facts() -> None:
    events = responses_events([" a", " b"])
    read = [
        openai_events.responses_event(name.encode(), json.dumps(payload).encode(), secrets=())
        for name, payload in events
    ]
    assert all(isinstance(event, Relayed) for event in read)
    assert [event.output for event in read if isinstance(event, Relayed)].count(True) == 2
    last = read[-1]
    assert isinstance(last, Relayed)
    assert last.finish_reason == "completed"
    assert last.usage is not None
    assert last.usage.completion_tokens == 2
    # Without `event:` lines, the `type` says what each event is.
    unnamed = openai_events.responses_event(None, json.dumps(events[4][1]).encode(), secrets=())
    assert isinstance(unnamed, Relayed)
    assert unnamed.output
    assert unnamed.event is None
    error = {"type": "error", "code": "server_error", "message": "boom", "sequence_number": 3}
    failed = openai_events.responses_event(b"error", json.dumps(error).encode(), secrets=())
    assert isinstance(failed, Failed)
    assert "boom" in failed.error.message


def test_named_events_survive_any_split() -> None:
    body = b"".join(responses_pieces([" x", "\u00e9\u4e2d"]))
    decoder = SSEDecoder()
    decoded = [item for piece in split_awkwardly(body) for item in decoder.feed_named(piece)]
    assert [(name, json.loads(data)) for name, data in decoded] == [
        (name.encode(), payload) for name, payload in responses_events([" x", "\u00e9\u4e2d"])
    ]


METRICS = StreamMetrics(1.0, 1.0, None, 1, 1.0)


def test_events_encoder_relays_bytes_and_ends_with_done() -> None:
    encoder = RelayedEventsEncoder(done_marker=True, named_errors=False)
    assert encoder.encode(StreamStarted("chat-1", "m")) == b""
    assert encoder.encode(Relayed(b'{"a":1}')) == b'data: {"a":1}\n\n'
    assert encoder.encode(Relayed(b'{"u":1}', forward=False)) == b""
    # A payload the upstream wrote over two `data:` lines stays two lines.
    assert encoder.encode(Relayed(b'{"a":\n1}')) == b'data: {"a":\ndata: 1}\n\n'
    assert encoder.encode(StreamEnded("stop", None, METRICS)) == b""
    assert encoder.close() == b"data: [DONE]\n\n"


def test_events_encoder_error_then_nothing() -> None:
    encoder = RelayedEventsEncoder(done_marker=True, named_errors=False)
    body = encoder.encode(StreamFailed(UpstreamUnavailable("gone")))
    assert body.startswith(b"data: ")
    assert body.endswith(b"\n\n")
    error = json.loads(body[6:])["error"]
    assert error == {
        "message": "gone",
        "type": "server_error",
        "param": None,
        "code": "upstream_unavailable",
    }
    assert encoder.close() == b""


def test_responses_encoder_names_events_and_its_error() -> None:
    encoder = RelayedEventsEncoder(done_marker=False, named_errors=True)
    first = encoder.encode(Relayed(b'{"type":"response.created"}', b"response.created"))
    assert first == b'event: response.created\ndata: {"type":"response.created"}\n\n'
    body = encoder.encode(StreamFailed(UpstreamUnavailable("gone")))
    assert body.startswith(b"event: error\ndata: ")
    payload = json.loads(body.split(b"data: ", 1)[1])
    assert payload["type"] == "error"
    assert payload["message"] == "gone"
    assert payload["sequence_number"] == 1
    assert payload["error"]["code"] == "upstream_unavailable"
    assert encoder.close() == b""


def test_answer_encoder_sends_the_body_alone() -> None:
    encoder = RelayedAnswerEncoder()
    assert encoder.heartbeat is None
    assert encoder.encode(StreamStarted("chat-1", "m")) == b""
    assert encoder.encode(Relayed(b'{"id":"x"}')) == b'{"id":"x"}'
    assert encoder.encode(StreamFailed(UpstreamUnavailable("late"))) == b""
    assert encoder.close() == b""


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=400)
@given(
    contents=st.lists(st.one_of(_TEXT, st.none()), min_size=0, max_size=3),
    finish_reason=st.sampled_from([None, None, "stop", "tool_calls"]),
    usage=st.sampled_from([None, "null", "counts"]),
    compact=st.booleans(),
    extra=st.dictionaries(st.sampled_from(["obfuscation", "service_tier", "error"]), _TEXT),
)
def test_fast_path_reads_what_parsing_reads(
    contents: list[str | None],
    finish_reason: str | None,
    usage: str | None,
    compact: bool,
    extra: dict[str, str],
) -> None:
    """`chat_chunk` decodes only the fields it needs; whatever the chunk, it must read the same
    facts as parsing it whole would."""
    chunk: dict[str, Any] = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": index,
                "delta": {} if content is None else {"content": content},
                "finish_reason": finish_reason if index == len(contents) - 1 else None,
            }
            for index, content in enumerate(contents)
        ],
        **extra,
    }
    if usage == "null":
        chunk["usage"] = None
    elif usage == "counts":
        chunk["usage"] = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    separators = (",", ":") if compact else (", ", ": ")
    payload = json.dumps(chunk, separators=separators, ensure_ascii=False).encode()
    for forward_usage in (False, True):
        fast = openai_events.chat_chunk(None, payload, forward_usage=forward_usage, secrets=())
        slow = openai_events.parsed_chat_chunk(payload, forward_usage=forward_usage, secrets=())
        if isinstance(slow, Failed):
            assert isinstance(fast, Failed)
            assert fast.error.message == slow.error.message
        else:
            assert fast == slow


def _shapes(odd: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Chat chunks whose fields hold what OpenAI puts there or, with `odd` values, not."""
    text = st.none() | st.text(max_size=3) | odd
    delta = st.dictionaries(
        st.sampled_from(["content", "refusal", "reasoning_content", "reasoning", "role"]), text
    )
    choice = st.fixed_dictionaries(
        {},
        optional={
            "index": st.sampled_from([0, 0, 1]) | odd,
            "delta": delta | st.none() | odd,
            "finish_reason": st.sampled_from([None, "stop", "length", ""]) | odd,
        },
    )
    usage = st.dictionaries(
        st.sampled_from(["prompt_tokens", "completion_tokens"]), st.integers(0, 9) | odd
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "choices": st.lists(choice | odd, max_size=3) | odd,
            "usage": usage | st.none() | odd,
            "error": st.sampled_from([None, "", "boom"]) | odd,
            "id": st.text(max_size=3),
        },
    )


_odd_value = st.one_of(st.booleans(), st.integers(-2, 2), st.lists(st.none(), max_size=1))


@settings(max_examples=500, deadline=None)
@given(st.one_of(_shapes(st.nothing()), _shapes(_odd_value)))
def test_the_typed_fast_read_agrees_with_the_lenient_one(chunk: dict[str, Any]) -> None:
    """`chunk_events` decodes the common shape into typed fields and hands any other to
    `chunk_events_lenient`; on every chunk both must read the same events."""
    payload = json.dumps(chunk).encode()
    fast = openai_events.chunk_events(payload, ())
    lenient = openai_events.chunk_events_lenient(payload, ())
    if lenient and isinstance(lenient[0], Failed):
        assert isinstance(fast[0], Failed)
        assert fast[0].error.message == lenient[0].error.message
    else:
        assert fast == lenient


@settings(max_examples=500, deadline=None)
@given(st.one_of(_shapes(st.nothing()), _shapes(_odd_value)), st.booleans())
def test_relayed_facts_agree_with_parsing_on_any_shape(
    chunk: dict[str, Any], forward_usage: bool
) -> None:
    payload = json.dumps(chunk).encode()
    fast = openai_events.chat_chunk(None, payload, forward_usage=forward_usage, secrets=())
    slow = openai_events.parsed_chat_chunk(payload, forward_usage=forward_usage, secrets=())
    if isinstance(slow, Failed):
        assert isinstance(fast, Failed)
        assert fast.error.message == slow.error.message
    else:
        assert fast == slow
