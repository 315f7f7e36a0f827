"""Timeouts end streams clearly and close the upstream; retries happen only before the first
token, while the client is there, and never duplicate anything."""

from __future__ import annotations

import time

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import answer_text, stream_chat


@pytest.fixture
def retrying(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    return service_factory(
        openai_api_key=TEST_KEY, openai_base_url=upstream.base_url, upstream_max_retries=2
    )


def test_first_token_timeout_before_headers_is_504_and_closes_upstream(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        first_token_timeout_seconds=0.5,
        heartbeat_seconds=5,
    )
    # Headers at once, then the first token never comes (each chunk within the read timeout).
    upstream.queue(Reply(pieces=[b": keep-alive\n\n"] * 100, pause=0.1))
    started = time.monotonic()
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 504
    assert "no token within 0.5 s" in response.json()["error"]["message"]
    assert time.monotonic() - started < 3
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)


def test_first_token_timeout_after_heartbeat_is_in_band(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        first_token_timeout_seconds=0.8,
        heartbeat_seconds=0.3,
    )
    upstream.queue(Reply(pieces=[b": keep-alive\n\n"] * 100, pause=0.1))
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert [e.event for e in events] == ["error", "message"]
    assert events[0].json()["error"]["type"] == "upstream_timeout"
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)


def test_transient_failures_are_retried_before_the_first_token(
    retrying: RunningService, upstream: FakeUpstream
) -> None:
    busy = Reply(status=503, headers={"retry-after-ms": "10"}, body=b'{"error":{"message":"x"}}')
    limited = Reply(status=429, headers={"retry-after-ms": "10"}, body=b'{"error":{"message":"x"}}')
    upstream.queue(busy, limited, Reply(pieces=answer_pieces([" one", " answer"])))
    response, events = stream_chat(retrying.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == " one answer"
    assert len(upstream.exchanges) == 3
    assert [e.event for e in events].count("start") == 1


def test_nothing_is_retried_after_the_first_token(
    retrying: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=[chunk_event(content="Half")]))  # then the body just ends
    upstream.default_reply = Reply(pieces=answer_pieces([" duplicate"]))
    _, events = stream_chat(retrying.base_url, {"prompt": "hi"})
    assert answer_text(events) == "Half"
    assert events[-2].event == "error"
    assert len(retrying.wait_for_summaries(1)) == 1  # the stream is over
    assert not upstream.wait_for(lambda: len(upstream.exchanges) > 1, timeout=1.0)


def test_retries_give_up_with_one_error(retrying: RunningService, upstream: FakeUpstream) -> None:
    upstream.default_reply = Reply(
        status=500, headers={"retry-after-ms": "10"}, body=b'{"error":{"message":"down"}}'
    )
    response, _ = stream_chat(retrying.base_url, {"prompt": "hi"})
    assert response.status_code == 502
    assert len(upstream.exchanges) == 3  # the first try and two retries


def test_a_hung_response_head_is_cut_at_the_read_timeout_and_retried(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=1,
        upstream_read_timeout_seconds=0.3,
    )
    upstream.queue(Reply(delay_before_headers=30), Reply(pieces=answer_pieces([" second"])))
    started = time.monotonic()
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == " second"
    assert len(upstream.exchanges) == 2
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)
    assert time.monotonic() - started < 10


def test_before_its_first_token_a_stream_waits_for_the_first_token_bound(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    """Between the head and the first token, gaps longer than the read timeout are the model
    thinking: FIRST_TOKEN_TIMEOUT_SECONDS bounds that wait (issue #16: no stream read is timed
    by the transport)."""
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        upstream_read_timeout_seconds=0.3,
        first_token_timeout_seconds=10,
    )
    thinking = [b": thinking\n\n"] * 3  # 0.5 s apart, each gap longer than the read timeout
    answer = b"".join(answer_pieces([" after", " thought"]))  # then the answer, at once
    upstream.queue(Reply(pieces=[*thinking, answer], pause=0.5))
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == " after thought"


def test_a_stalled_whole_answer_is_cut_at_the_read_timeout(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        upstream_read_timeout_seconds=0.3,
    )
    upstream.queue(Reply(pieces=[b'{"id": "chatcmpl-x", "choices": ['], hang=True))
    started = time.monotonic()
    response = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer unused"},
        timeout=10,
    )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"  # OpenAI's shape on /v1
    assert time.monotonic() - started < 5
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)
