"""Resumable streams on a real redis-server (issue #13), with the service in this process so the
tests can read its stream records: the grace period, resuming in each format, the endpoints'
refusals, and the opt-out. Across real replicas and nginx: `test_resume_replicas.py`; when
Redis fails: `test_resume_failures.py`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import EventSource
from pydantic import ValidationError

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, first_token_then_silence
from testkit.redis_server import RedisServer
from testkit.service_process import run_service_until_exit
from testkit.services import TEST_KEY, RunningService, ServiceFactory, make_settings
from testkit.sse_client import SSEEvent, read_events
from testkit.waiting import wait_until

TOKENS = [f" t{i}" for i in range(30)] + [" ü\r\n", ' "q"', " end"]
ANSWER = "".join(TOKENS)
PAUSE = 0.04
LONG = [f" w{i}" for i in range(300)]  # 12 s at PAUSE: cut short by every test that uses it

ResumingFactory = Callable[..., RunningService]


@pytest.fixture
def resuming(
    service_factory: ServiceFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> ResumingFactory:
    """Start a service with resumable streams on the test's redis-server."""

    def start(**overrides: Any) -> RunningService:
        settings: dict[str, Any] = {
            "openai_api_key": TEST_KEY,
            "openai_base_url": upstream.base_url + "/v1",
            "upstream_max_retries": 0,
            "redis_url": redis_server.url,
            "resume_grace_seconds": 1.0,
            "resume_lease_seconds": 1.0,
        }
        return service_factory(**(settings | overrides))

    return start


def sse(events: Any) -> list[SSEEvent]:
    return [SSEEvent(event.event, event.data, event.id) for event in events]


def text_of(events: list[SSEEvent]) -> str:
    return "".join(event.json()["content"] for event in events if event.data != "[DONE]")


def start_and_cut(base_url: str, count: int, **kwargs: Any) -> list[SSEEvent]:
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", base_url + "/api/chat/stream", json={"message": "hi"}, **kwargs) as r,
    ):
        assert r.status_code == 200, r.read()
        return sse(islice(EventSource(r).iter_sse(), count))


def resume(base_url: str, stream_id: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(base_url + f"/api/chat/stream/{stream_id}", timeout=30, **kwargs)


def disconnected_at(upstream: FakeUpstream, timeout: float = 10.0) -> float:
    exchange = upstream.exchanges[0]
    assert upstream.wait_for(lambda: exchange.disconnected_at is not None, timeout)
    assert exchange.disconnected_at is not None
    return exchange.disconnected_at


def test_an_abandoned_stream_is_cancelled_after_the_grace_period_not_before(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming(resume_grace_seconds=1.5)
    upstream.queue(Reply(pieces=answer_pieces(LONG), pause=PAUSE))
    start_and_cut(service.base_url, 3)
    left_at = time.monotonic()
    closed_at = disconnected_at(upstream)
    # A blip is not an abandon: the upstream went on for the grace period (a tick more at most).
    assert 1.4 <= closed_at - left_at < 1.5 + 2.0
    [summary] = service.wait_for_summaries(1)
    assert summary["outcome"] == "cancelled"
    assert 3 < summary["delivered_text_deltas"] < len(LONG)


def test_a_client_back_within_the_grace_period_gets_the_rest(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming(resume_grace_seconds=1.5)
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    first = start_and_cut(service.base_url, 4)
    time.sleep(0.5)  # away for a moment (a phone changing networks)
    stream_id = first[0].json()["id"]
    rest = read_events(resume(service.base_url, stream_id, headers={"Last-Event-ID": first[-1].id}))
    assert text_of(first) + text_of(rest) == ANSWER
    assert rest[-1].data == "[DONE]"
    assert len(upstream.exchanges) == 1
    [summary] = service.wait_for_summaries(1)
    assert summary["outcome"] == "completed"


def test_a_reader_on_another_replica_keeps_the_stream_alive_past_the_grace_period(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    """The producer has no client of its own; the reader elsewhere marks itself in Redis."""
    producer, other = resuming(), resuming()
    tokens = [f" r{i}" for i in range(60)]  # ~2.4 s, beyond the 1 s grace
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=PAUSE))
    first = start_and_cut(producer.base_url, 2)
    stream_id = first[0].json()["id"]
    rest = read_events(resume(other.base_url, stream_id, params={"last_event_id": first[-1].id}))
    assert text_of(first) + text_of(rest) == "".join(tokens)
    assert rest[-2].json()["finish_reason"] == "stop"
    assert producer.wait_for_summaries(1)[0]["outcome"] == "completed"


def test_a_resume_elsewhere_waits_for_events_the_store_has_not_got_yet(
    resuming: ResumingFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """The producer's client gets each event from memory, before the writer stores it: a client
    cut right after an event and sent to another replica can be ahead of Redis. That replica
    waits for the store to catch up (as long as storing an event can take) rather than refuse
    the position after a tick."""
    # A lease and grace period that outlast the held writes (renewals and marks wait too; the
    # lease was renewed up to a tick before the hold).
    settings = {"redis_timeout_seconds": 3.0, "resume_lease_seconds": 4.0}
    producer, other = (resuming(resume_grace_seconds=5.0, **settings) for _ in range(2))
    tick = 1.0  # min(1, lease / 3, grace / 4): what the other replica waited before
    writes_held = 2.5  # longer than a tick, within a write's timeout (3 s + a tick)
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer.base_url + "/api/chat/stream", json={"message": "hi"}) as r,
    ):
        events = EventSource(r).iter_sse()
        first = sse(islice(events, 2))
        # Redis holds every write from here on (reads go on): what follows is only in memory.
        paused_at = time.monotonic()
        held_ms = str(int(writes_held * 1000))
        assert redis_server.command("CLIENT", "PAUSE", held_ms, "WRITE") == "+OK"
        first += sse(islice(events, 4))
    stream_id = first[0].json()["id"]
    assert time.monotonic() - paused_at < writes_held - tick - 0.5, "the machine is too slow here"
    rest = resume(other.base_url, stream_id, headers={"Last-Event-ID": first[-1].id})
    assert rest.status_code == 200, rest.text
    assert text_of(first) + text_of(read_events(rest)) == ANSWER
    assert len(upstream.exchanges) == 1


def test_a_client_that_leaves_while_its_position_is_awaited_stops_the_wait(
    resuming: ResumingFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    """A position the live stream has not reached is awaited on a blocking read from Redis,
    up to the store's lag (4.55 s here); a client that leaves ends the wait within a tick."""
    producer, other = resuming(), resuming()
    upstream.queue(first_token_then_silence(["a", "b"], 10))
    first = start_and_cut(producer.base_url, 2)
    stream_id = first[0].json()["id"]
    ahead = {"Last-Event-ID": f"{stream_id}:50"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(
            other.base_url + f"/api/chat/stream/{stream_id}",
            headers=ahead,
            timeout=httpx.Timeout(30, read=0.6),
        )
    left_at = time.monotonic()
    store = redis.Redis.from_url(redis_server.url)
    try:
        assert wait_until(lambda: store.info("clients")["blocked_clients"] == 0, 2.0)
        assert time.monotonic() - left_at < 2.0
    finally:
        store.close()


def test_a_wait_for_a_position_ends_with_a_retryable_503_when_the_shutdown_grace_runs_out(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    """The wait would outlast the grace (and uvicorn's backstop after it): the client is told
    to resume elsewhere instead."""
    producer, other = resuming(), resuming(shutdown_grace_seconds=0)
    upstream.queue(first_token_then_silence(["a", "b"], 10))
    first = start_and_cut(producer.base_url, 2)
    stream_id = first[0].json()["id"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            resume, other.base_url, stream_id, headers={"Last-Event-ID": f"{stream_id}:50"}
        )
        time.sleep(0.3)  # the other replica is waiting for event 50
        asked_at = time.monotonic()
        other.begin_shutdown()
        answer = waiting.result(timeout=10)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["type"] == "server_shutting_down"
    assert answer.json()["error"]["retryable"] is True
    assert time.monotonic() - asked_at < 2.0  # a tick or two; the store's lag is 4.55 s here


def test_leaving_before_the_first_event_cancels_at_once(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    """Nobody can resume a stream whose id it never saw: no grace period for it."""
    service = resuming(resume_grace_seconds=30)
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), delay_before_headers=10))
    host, port = service.host_port
    with socket.create_connection((host, port)) as connection:
        body = b'{"message": "hi"}'
        connection.sendall(
            b"POST /api/chat/stream HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        assert upstream.wait_for(lambda: len(upstream.exchanges) == 1)
    left_at = time.monotonic()
    assert disconnected_at(upstream) - left_at < 2.0
    [summary] = service.wait_for_summaries(1)
    assert summary["outcome"] == "cancelled"


@pytest.mark.parametrize("format_name", ["ndjson", "text"])
def test_streams_resume_in_the_format_they_were_started_in(
    resuming: ResumingFactory, upstream: FakeUpstream, format_name: str
) -> None:
    service = resuming()
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    url = service.base_url + f"/api/chat/stream?format={format_name}"
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", url, json={"message": "hi"}) as response,
    ):
        stream_id = response.headers["x-stream-id"]  # before the first byte
        lines = list(islice(response.iter_lines(), 4))
    if format_name == "ndjson":
        # Line n is event n: the client resumes after the lines it has.
        resumed = resume(service.base_url, stream_id, params={"last_event_id": str(len(lines) - 1)})
        assert resumed.headers["content-type"] == "application/x-ndjson"
        objects = [json.loads(line) for line in lines + resumed.text.splitlines()]
        assert [o["type"] for o in objects] == ["start"] + ["delta"] * len(TOKENS) + ["end"]
        assert "".join(o["content"] for o in objects) == ANSWER
    else:
        # Plain text carries no event ids: the client asks for the whole answer again.
        resumed = resume(service.base_url, stream_id)
        assert resumed.headers["content-type"].startswith("text/plain")
        assert resumed.text == ANSWER
    assert len(upstream.exchanges) == 1


def test_resuming_a_finished_stream_replays_it_and_then_answers_204(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming()
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    with httpx.Client(timeout=30) as client:
        whole = read_events(
            client.post(service.base_url + "/api/chat/stream", json={"message": "x"})
        )
        stream_id = whole[0].json()["id"]
        again = read_events(client.get(service.base_url + f"/api/chat/stream/{stream_id}"))
        # A client that has the end event but not [DONE] gets [DONE] with its id.
        tail = client.get(
            service.base_url + f"/api/chat/stream/{stream_id}",
            headers={"Last-Event-ID": whole[-3].id},
        )
        after_end = client.get(
            service.base_url + f"/api/chat/stream/{stream_id}",
            headers={"Last-Event-ID": whole[-2].id},
        )
        after_done = client.get(
            service.base_url + f"/api/chat/stream/{stream_id}",
            headers={"Last-Event-ID": whole[-1].id},
        )
    assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in whole]
    assert [e.id for e in read_events(tail)] == [whole[-2].id, whole[-1].id]
    assert after_end.status_code == 204
    assert after_done.status_code == 204


def test_the_resume_endpoints_refuse_clearly(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming()
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    whole = read_events(httpx.post(service.base_url + "/api/chat/stream", json={"message": "x"}))
    stream_id = whole[0].json()["id"]
    base = service.base_url
    cases = {
        "unknown": (resume(base, "chat-" + "0" * 32), 404, "stream_not_found"),
        "stop unknown": (httpx.post(base + "/api/chat/chat-0/stop"), 404, "stream_not_found"),
        "bad id": (resume(base, "a b"), 422, "invalid_request"),
        "other stream": (
            resume(base, stream_id, headers={"Last-Event-ID": "chat-other:3"}),
            422,
            "invalid_request",
        ),
        "garbage": (resume(base, stream_id, params={"last_event_id": "x"}), 422, "invalid_request"),
        "ahead": (resume(base, stream_id, params={"last_event_id": "999"}), 422, "invalid_request"),
        "format": (resume(base, stream_id, params={"format": "text"}), 422, "invalid_request"),
    }
    for name, (response, status, error_type) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["type"] == error_type, name


def test_with_api_keys_only_the_key_that_started_a_stream_sees_it(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming(service_api_keys="first-key,second-key")
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    first = {"Authorization": "Bearer first-key"}
    second = {"Authorization": "Bearer second-key"}
    whole = read_events(
        httpx.post(service.base_url + "/api/chat/stream", json={"message": "x"}, headers=first)
    )
    stream_id = whole[0].json()["id"]
    assert resume(service.base_url, stream_id, headers=first).status_code == 200
    assert resume(service.base_url, stream_id, headers=second).status_code == 404
    stop = httpx.post(service.base_url + f"/api/chat/{stream_id}/stop", headers=second)
    assert stop.status_code == 404
    assert resume(service.base_url, stream_id).status_code == 401


def test_resumable_false_keeps_the_direct_path_and_immediate_cancellation(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming(resume_grace_seconds=30)
    upstream.queue(Reply(pieces=answer_pieces(LONG), pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            service.base_url + "/api/chat/stream?resumable=false",
            json={"message": "hi"},
        ) as response,
    ):
        assert "x-stream-id" not in response.headers
        first = sse(islice(EventSource(response).iter_sse(), 3))
    left_at = time.monotonic()
    assert disconnected_at(upstream) - left_at < 1.0
    assert resume(service.base_url, first[0].json()["id"]).status_code == 404
    bad = httpx.post(service.base_url + "/api/chat/stream?resumable=maybe", json={"message": "x"})
    assert bad.status_code == 422


def test_without_redis_url_nothing_changes_and_redis_is_not_imported(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    response = httpx.post(service.base_url + "/api/chat/stream", json={"message": "x"})
    assert "x-stream-id" not in response.headers
    stream_id = read_events(response)[0].json()["id"]
    assert resume(service.base_url, stream_id).json()["error"]["type"] == "not_found"
    assert httpx.post(service.base_url + f"/api/chat/{stream_id}/stop").status_code == 404
    opt_out = httpx.post(service.base_url + "/api/chat/stream?resumable=false", json={})
    assert opt_out.status_code == 422  # an unknown parameter, as before
    paths = httpx.get(service.base_url + "/openapi.json").json()["paths"]
    assert not any("{stream_id}" in path for path in paths)
    probe = (
        "import sys; from service.app import create_app; from service.settings import Settings; "
        "create_app(Settings(_env_file=None)); print('redis' in sys.modules)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert imported.stdout.strip() == "False"


@pytest.mark.server
def test_a_redis_url_of_another_scheme_stops_the_service_without_repeating_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="REDIS_URL"):
        make_settings(redis_url="http://cache:6379")
    result = run_service_until_exit(tmp_path, REDIS_URL="http://user:hunter2@cache:6379")
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
