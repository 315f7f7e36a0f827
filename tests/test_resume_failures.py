"""Resumable streams when things fail (issue #13), on a real redis-server: Redis unreachable at
start or killed mid-stream (streaming goes on without resume, logged and counted, never a 500),
the same stream id twice (refused), and Redis memory bounded by trimming and TTLs, measured for
a 2,000-token answer. The producing replica dying is in `test_resume_replicas.py`.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from service import chat
from service.events import StreamStarted, TextDelta
from service.resume.codec import pack
from service.resume.hub import RETRY_AFTER_FAILURE_SECONDS, ResumableStreams
from service.resume.store import Append, StreamStore
from service.runtime import runtime_of
from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.redis_server import RedisServer
from testkit.services import RunningService, make_settings
from testkit.sse_client import read_events
from testkit.waiting import wait_until
from tests.test_resume import ResumingFactory, resuming, sse, text_of

__all__ = ["resuming"]  # the fixture, imported so that pytest finds it in this module

TOKENS = [f" t{i}" for i in range(40)]
ANSWER = "".join(TOKENS)
PAUSE = 0.04


def hub_of(service: RunningService) -> ResumableStreams:
    resume = runtime_of(service._server.config.app).resume  # type: ignore[arg-type]
    assert resume is not None
    return resume


def post(service: RunningService, **kwargs: Any) -> httpx.Response:
    return httpx.post(
        service.base_url + "/api/chat/stream", json={"message": "x"}, timeout=30, **kwargs
    )


def test_redis_unreachable_at_start_streams_without_resume_and_recovers(
    resuming: ResumingFactory,
    upstream: FakeUpstream,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis_server.stop()
    service = resuming()
    upstream.queue(*(Reply(pieces=answer_pieces(TOKENS)) for _ in range(3)))
    with caplog.at_level(logging.WARNING, logger="service.resume"):
        first, second = post(service), post(service)  # the second skips Redis at once
    for response in (first, second):
        assert response.status_code == 200
        assert "x-stream-id" not in response.headers  # not resumable, said up front
        assert text_of(read_events(response)) == ANSWER
    assert [r.message for r in caplog.records if "resume unavailable" in r.message]
    assert hub_of(service).unavailable_total == 1
    stream_id = read_events(first)[0].json()["id"]
    refused = httpx.get(service.base_url + f"/api/chat/stream/{stream_id}")
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "resume_unavailable"
    assert refused.json()["error"]["retryable"] is True
    # Redis back: after the pause, new streams are resumable again.
    redis_server.start_again()
    time.sleep(RETRY_AFTER_FAILURE_SECONDS)
    third = post(service)
    assert "x-stream-id" in third.headers
    assert text_of(read_events(third)) == ANSWER


def test_redis_killed_mid_stream_the_client_here_gets_everything_a_reader_elsewhere_an_error(
    resuming: ResumingFactory,
    upstream: FakeUpstream,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer, other = resuming(), resuming()
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    with (
        caplog.at_level(logging.WARNING, logger="service.resume"),
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer.base_url + "/api/chat/stream", json={"message": "x"}) as r,
    ):
        original = EventSource(r).iter_sse()
        head = sse(islice(original, 3))
        stream_id = head[0].json()["id"]
        with client.stream("GET", other.base_url + f"/api/chat/stream/{stream_id}") as elsewhere:
            reader = EventSource(elsewhere).iter_sse()
            read_before = sse(islice(reader, 3))
            redis_server.kill()
            killed_at = time.monotonic()
            read_after = sse(reader)
            reader_done_at = time.monotonic()
        tail = sse(original)
    assert text_of(head + tail) == ANSWER
    assert tail[-1].data == "[DONE]"
    assert read_after[-1].data == "[DONE]"
    failure = read_after[-2].json()
    assert failure["type"] == "error"
    assert failure["error"]["type"] == "resume_unavailable"
    assert reader_done_at - killed_at < 5.0
    assert ANSWER.startswith(text_of(read_before + read_after[:-2]))
    assert producer.wait_for_summaries(1)[0]["outcome"] == "completed"
    assert any("resume unavailable" in record.message for record in caplog.records)


def test_redis_killed_while_nobody_is_connected_cancels_at_once(
    resuming: ResumingFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """Nobody could resume it any more: the grace period no longer applies."""
    service = resuming(resume_grace_seconds=60)
    upstream.queue(Reply(pieces=answer_pieces([f" w{i}" for i in range(300)]), pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", service.base_url + "/api/chat/stream", json={"message": "x"}) as r,
    ):
        list(islice(EventSource(r).iter_sse(), 3))
    redis_server.kill()
    killed_at = time.monotonic()
    exchange = upstream.exchanges[0]
    assert upstream.wait_for(lambda: exchange.disconnected_at is not None, timeout=10)
    assert exchange.disconnected_at is not None
    assert exchange.disconnected_at - killed_at < 3.0
    assert service.wait_for_summaries(1)[0]["outcome"] == "cancelled"


def test_the_same_stream_id_twice_is_refused(
    resuming: ResumingFactory, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = resuming()
    monkeypatch.setattr(chat, "new_stream_id", lambda: "chat-fixed")
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)), Reply(pieces=answer_pieces(TOKENS)))
    first, second = post(service), post(service)
    assert text_of(read_events(first)) == ANSWER
    assert second.status_code == 409
    assert second.json()["error"]["type"] == "stream_exists"
    assert len(upstream.exchanges) == 1  # refused before the upstream was asked
    assert runtime_of(service._server.config.app).stream_limits.active == 0  # type: ignore[arg-type]


def _memory(redis_server: RedisServer, key: str) -> int:
    reply = redis_server.command("MEMORY", "USAGE", key)
    assert reply.startswith(":"), reply
    return int(reply[1:])


def test_a_2000_token_answer_in_redis_is_bounded_and_expires(
    resuming: ResumingFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    tokens = [f" tok{i}" for i in range(2000)]
    service = resuming(resume_ttl_seconds=60)
    upstream.queue(Reply(pieces=answer_pieces(tokens)))  # all at once: a few large entries
    events = read_events(post(service))
    stream_id = events[0].json()["id"]
    key = f"llm-stream:{stream_id}"
    # The writer stores the end within a flush or two.
    deadline = time.monotonic() + 5
    while redis_server.command("EXISTS", key + ":lease") != ":0" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redis_server.command("EXISTS", key + ":lease") == ":0"  # the producer let go
    text_bytes = len("".join(tokens).encode())
    used = _memory(redis_server, key + ":events")
    print(f"\n2,000-token answer ({text_bytes} bytes of text), burst: {used} bytes in Redis")
    assert used < 2 * text_bytes + 16_384
    for part in ("events", "meta"):
        ttl = int(redis_server.command("PTTL", f"{key}:{part}")[1:])
        assert 0 < ttl <= 60_000
    replayed = read_events(httpx.get(service.base_url + f"/api/chat/stream/{stream_id}"))
    assert text_of(replayed) == "".join(tokens)


async def test_a_live_paced_2000_token_answer_one_entry_per_token_is_bounded(
    redis_server: RedisServer,
) -> None:
    """A model slower than the writer's flush interval (most are) gives one entry per token:
    the layout's worst case, stored here through the store itself."""
    settings = make_settings(redis_url=redis_server.url)
    store = StreamStore(settings, block_seconds=0.1)
    tokens = [f" tok{i}" for i in range(2000)]
    try:
        await store.create("chat-live", {"format": "sse", "key": None}, "test")
        await store.append([Append("chat-live", 0, [pack(StreamStarted("chat-live", "m"))], False)])
        for number, token in enumerate(tokens, start=1):
            await store.append([Append("chat-live", number, [pack(TextDelta(token))], False)])
    finally:
        await store.aclose()
    text_bytes = len("".join(tokens).encode())
    used = _memory(redis_server, "llm-stream:chat-live:events")
    print(f"\n2,000-token answer ({text_bytes} bytes of text), one entry per token: {used} bytes")
    assert used < 40 * 2000 + text_bytes


def test_trimming_keeps_about_the_last_events_and_refuses_to_resume_before_them(
    resuming: ResumingFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    tokens = [f" w{i}" for i in range(400)]
    service = resuming(resume_max_events=100)
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=0.012))  # a few tokens an entry
    events = read_events(post(service))
    stream_id = events[0].json()["id"]
    url = service.base_url + f"/api/chat/stream/{stream_id}"
    # Until the last batch is in Redis the producer's memory serves the whole stream (200);
    # the client's last event does not wait for that flush.
    assert wait_until(lambda: httpx.get(url).status_code == 410)
    stored = int(redis_server.command("XLEN", f"llm-stream:{stream_id}:events")[1:])
    assert stored <= 100  # entries, each holding one or more of the last 100 events
    whole = httpx.get(url)
    assert whole.status_code == 410
    assert whole.json()["error"]["type"] == "stream_events_expired"
    # From a recent event, the ids and text go on exactly.
    recent = read_events(
        httpx.get(
            service.base_url + f"/api/chat/stream/{stream_id}",
            headers={"Last-Event-ID": events[-8].id},
        )
    )
    assert [(e.id, e.data) for e in recent] == [(e.id, e.data) for e in events[-7:]]
