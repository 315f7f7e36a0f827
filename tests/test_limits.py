"""Limits: concurrency (429 + Retry-After, slots always given back), body size (413), and the
size and spend bounds (422 naming the limit)."""

from __future__ import annotations

import json

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.raw_client import open_stream
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import stream_chat


@pytest.fixture
def limited(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    return service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        max_concurrent_streams=2,
        max_body_bytes=64 * 1024,
        max_messages=3,
        max_input_chars=1000,
        max_output_tokens=100,
    )


def post(service: RunningService, body: object, **kwargs: object) -> httpx.Response:
    return httpx.post(service.base_url + "/api/chat/stream", json=body, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_concurrency_limit_and_slots_given_back(
    limited: RunningService, upstream: FakeUpstream
) -> None:
    slow = Reply(pieces=answer_pieces([" w"] * 100), pause=0.1)
    upstream.queue(slow, slow)
    first = open_stream(limited.host_port, {"prompt": "a"})
    second = open_stream(limited.host_port, {"prompt": "b"})
    assert upstream.wait_for_exchanges(2)

    refused = post(limited, {"prompt": "c"})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "too_many_streams"
    assert "2 concurrent streams" in refused.json()["error"]["message"]
    assert len(upstream.exchanges) == 2

    # A cancelled stream gives its slot back (before its summary is logged)...
    first.close()
    assert upstream.wait_for(lambda: any(e.disconnected_at for e in upstream.exchanges))
    assert [s["outcome"] for s in limited.wait_for_summaries(1)] == ["cancelled"]
    # ...and so does a stream that fails: each of these takes the one free slot in turn.
    upstream.queue(Reply(status=500, body=b'{"error":{"message":"x"}}'))
    # The slot is given back just after the last byte is sent: a client can be faster than
    # that, so each next request waits for the previous stream's summary (logged after it).
    assert post(limited, {"prompt": "d"}).status_code == 502
    assert len(limited.wait_for_summaries(2)) == 2
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    assert post(limited, {"prompt": "e"}).status_code == 200
    assert [s["outcome"] for s in limited.wait_for_summaries(3)] == [
        "cancelled",
        "error",
        "completed",
    ]
    upstream.queue(slow)
    # With `second`, the limit is reached again.
    third = open_stream(limited.host_port, {"prompt": "f"})
    assert upstream.wait_for_exchanges(5)
    assert post(limited, {"prompt": "g"}).status_code == 429
    second.close()
    third.close()


def test_body_too_large_is_413(limited: RunningService, upstream: FakeUpstream) -> None:
    response = post(limited, {"prompt": "x" * 100_000})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    assert upstream.exchanges == []


def test_chunked_body_too_large_is_413(limited: RunningService) -> None:
    def chunks() -> object:
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = httpx.post(limited.base_url + "/api/chat/stream", content=chunks())  # type: ignore[arg-type]
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"messages": [{"role": "user", "content": "x"}] * 4}, "MAX_MESSAGES"),
        ({"prompt": "y" * 1001}, "MAX_INPUT_CHARS"),
        ({"prompt": "x", "max_tokens": 101}, "MAX_OUTPUT_TOKENS"),
        ({"prompt": "x", "max_tokens": 10**12}, "MAX_OUTPUT_TOKENS"),
    ],
)
def test_size_and_spend_bounds(
    limited: RunningService, upstream: FakeUpstream, body: dict[str, object], named: str
) -> None:
    response = post(limited, body)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]
    assert upstream.exchanges == []


def test_defaults_refuse_hostile_sizes(service: RunningService, upstream: FakeUpstream) -> None:
    million = post(service, {"prompt": "z" * 1_000_000})
    assert million.status_code in (413, 422)
    many = post(service, {"messages": [{"role": "user", "content": "hi"}] * 10_000})
    assert many.status_code in (413, 422)
    assert "MAX_MESSAGES" in many.text or many.status_code == 413
    assert upstream.exchanges == []


def test_within_limits_streams(limited: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" fine"])))
    response, events = stream_chat(limited.base_url, {"prompt": "x" * 1000, "max_tokens": 100})
    assert response.status_code == 200
    assert json.loads(events[-2].data)["finish_reason"] == "stop"
