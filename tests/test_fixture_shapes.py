"""Every upstream shape in testkit/recordings streams correctly through the real service and SDK.

The fixture bytes are replayed split at awkward offsets (through CRLFs, JSON and multi-byte
characters), so the decoder is tested on reads as a real network delivers them.
"""

from __future__ import annotations

import json

import pytest

from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, split_awkwardly
from testkit.services import RunningService, ServiceFactory
from testkit.sse_client import answer_text, stream_chat


def fixture_text(name: str) -> str:
    """The answer text the fixture carries, read independently of the service's decoder."""
    text = []
    for block in (RECORDINGS / name).read_text().split("\n\n"):
        if not block.startswith("data: {"):
            continue
        for choice in json.loads(block.removeprefix("data: ")).get("choices", []):
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


@pytest.mark.parametrize(
    ("fixture", "finish_reason", "usage"),
    [
        (
            "openai_chat_stream.sse",
            "stop",
            {"prompt_tokens": 19, "completion_tokens": 12, "total_tokens": 31},
        ),
        ("azure_chat_stream.sse", "stop", None),
        ("azure_async_filter_stream.sse", "stop", None),
        ("content_filter_stream.sse", "content_filter", None),
        ("length_stream.sse", "length", None),
        ("tool_calls_stream.sse", "tool_calls", None),
    ],
)
def test_fixture_streams_exact_text_and_finish(
    service: RunningService,
    upstream: FakeUpstream,
    fixture: str,
    finish_reason: str,
    usage: dict[str, int] | None,
) -> None:
    raw = (RECORDINGS / fixture).read_bytes()
    upstream.queue(Reply(pieces=list(split_awkwardly(raw)), pause=0.0005))

    response, events = stream_chat(service.base_url, {"message": "hi"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert [e.event for e in events[:1]] == ["start"]
    assert events[-1].data == "[DONE]"
    end = events[-2]
    assert end.event == "end"
    assert end.json()["finish_reason"] == finish_reason
    assert end.json()["usage"] == usage
    deltas = [e for e in events if e.event == "message" and e.data != "[DONE]"]
    assert all(e.json()["type"] == "delta" and e.json()["content"] for e in deltas)
    assert answer_text(events) == fixture_text(fixture)
    assert len({e.id for e in events}) == len(events)


def test_openai_fixture_text_is_byte_exact(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(
        Reply(
            pieces=list(split_awkwardly((RECORDINGS / "openai_chat_stream.sse").read_bytes(), (1,)))
        )
    )
    _, events = stream_chat(service.base_url, {"prompt": "hi"})
    text = answer_text(events)
    assert text == "Hello! Ünïcødé and emoji 😀\n\n- a list\n- data: not a field\r\ndone."


def test_content_filtered_answer_is_not_an_empty_success(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=[(RECORDINGS / "content_filter_stream.sse").read_bytes()]))
    _, events = stream_chat(service.base_url, {"prompt": "hi"})
    assert events[-2].json()["finish_reason"] == "content_filter"
    summary = service.wait_for_summaries(1)[0]
    assert summary["finish_reason"] == "content_filter"


def test_request_reaches_upstream_with_usage_requested(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=[(RECORDINGS / "length_stream.sse").read_bytes()]))
    stream_chat(
        service.base_url,
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Again"},
            ],
            "model": "gpt-test",
            "temperature": 0.5,
            "max_tokens": 5,
        },
    )
    sent = upstream.exchanges[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-SECRET-4b1d9f0c2e7a"
    body = sent.json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 5
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]


def test_include_usage_can_be_turned_off(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key="k", openai_base_url=upstream.base_url, upstream_include_usage=False
    )
    upstream.queue(Reply(pieces=[(RECORDINGS / "length_stream.sse").read_bytes()]))
    stream_chat(running.base_url, {"prompt": "hi"})
    assert "stream_options" not in upstream.exchanges[0].json()
