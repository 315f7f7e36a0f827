"""Resumable streams across real replicas (issue #13): Debian's redis-server, two `python -m
service` processes, and a stock nginx balancing them round-robin with no stickiness.

A client streams through nginx, its connection is cut mid-answer, and it reconnects through
nginx, which sends it to the other replica: it must get exactly the rest of the answer (the
concatenated text equals what the upstream sent) while the fake upstream saw one request. The
same for a browser-style reconnect to the original GET URL with `Last-Event-ID`, for a stop
sent to the other replica, and for the producing replica dying (SIGKILL) under a resuming
client, which must get a retryable `stream_lost` error and `[DONE]` within the lease period.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource
from playwright.sync_api import Page

from testkit.cutting_proxy import CuttingProxy
from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.nginx import NginxProxy
from testkit.redis_server import RedisServer
from testkit.service_process import start_service_process, stop_process
from testkit.services import TEST_KEY
from testkit.sse_client import SSEEvent, read_events

pytestmark = pytest.mark.server  # starts its own processes

TOKENS = [f" tok{i}" for i in range(40)] + [" é🌍\n", ' "quoted"', " data: x", " end."]
ANSWER = "".join(TOKENS)
PAUSE = 0.05  # the upstream's pause between tokens: the answer takes ~2 s
CUT_AFTER = 6  # events the client reads before its connection is cut
LEASE_SECONDS = 1.0
GRACE_SECONDS = 3.0
BROWSER_RETRY_MS = 300  # EventSource's reconnection delay (the `retry:` field)


@dataclass
class Replicas:
    redis: RedisServer
    upstream: FakeUpstream
    environment: dict[str, str]
    processes: list[subprocess.Popen[str]]
    urls: list[str]
    nginx: NginxProxy
    # Requests nginx had logged when the test began.
    logged_before: int = 0

    def access_log(self, count: int) -> list[str]:
        """nginx's lines for this test's requests, once it has logged `count` of them (it logs
        a cut request when it notices the cut)."""
        self.upstream.wait_for(lambda: len(self.nginx.access_log()) >= self.logged_before + count)
        return self.nginx.access_log()[self.logged_before :]

    def served_by(self, count: int) -> list[str]:
        """The replica (`host:port`) that served each of this test's requests through nginx."""
        return [line.rsplit(" ", 1)[-1] for line in self.access_log(count)]


def start_replica(
    directory: Path, environment: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    """`python -m service` configured by `environment`, its output captured."""
    return start_service_process(directory, http="httptools", capture=True, **environment)


@pytest.fixture(scope="module")
def running_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Started once for the module (a service process takes seconds to start on a busy CI)."""
    directory = tmp_path_factory.mktemp("replicas")
    redis = RedisServer.start(directory / "redis")
    upstream = FakeUpstream()
    upstream.start()
    environment = {
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": upstream.base_url + "/v1",
        "UPSTREAM_MAX_RETRIES": "0",
        "REDIS_URL": redis.url,
        "RESUME_GRACE_SECONDS": str(GRACE_SECONDS),
        "RESUME_LEASE_SECONDS": str(LEASE_SECONDS),
        "SSE_RETRY_MS": str(BROWSER_RETRY_MS),
    }
    processes: list[subprocess.Popen[str]] = []
    try:
        urls = []
        for _ in range(2):
            process, url = start_replica(directory, environment)
            processes.append(process)
            urls.append(url)
        ports = [int(url.rsplit(":", 1)[1]) for url in urls]
        nginx = NginxProxy.start(ports[0], more_backends=ports[1:], directory=directory / "nginx")
        try:
            yield Replicas(redis, upstream, environment, processes, urls, nginx)
        finally:
            nginx.stop()
    finally:
        for process in processes:
            stop_process(process)
            process.communicate()
        upstream.stop()
        redis.stop()


@pytest.fixture
def replicas(running_replicas: Replicas) -> Replicas:
    """The module's replicas, with a clean upstream record for this test."""
    running_replicas.upstream.exchanges.clear()
    running_replicas.upstream.replies.clear()
    running_replicas.logged_before = len(running_replicas.nginx.served_by())
    return running_replicas


def read_some(response: httpx.Response, count: int) -> list[SSEEvent]:
    events = []
    for event in EventSource(response).iter_sse():
        events.append(SSEEvent(event.event, event.data, event.id))
        if len(events) == count:
            break
    return events


def text_of(events: list[SSEEvent]) -> str:
    return "".join(event.json()["content"] for event in events if event.data != "[DONE]")


def start_and_cut(client: httpx.Client, url: str, **kwargs: object) -> list[SSEEvent]:
    """Start a stream, read `CUT_AFTER` events, and cut the connection."""
    with client.stream("POST", url, json={"message": "hi"}, **kwargs) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, response.read()
        return read_some(response, CUT_AFTER)


def test_a_cut_stream_resumes_on_the_other_replica_through_nginx(replicas: Replicas) -> None:
    replicas.upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    with httpx.Client(timeout=30) as client:
        first = start_and_cut(client, replicas.nginx.base_url + "/api/chat/stream")
        last_id = first[-1].id
        stream_id = first[0].json()["id"]
        assert last_id == f"{stream_id}:{CUT_AFTER - 1}"
        with client.stream(
            "GET",
            replicas.nginx.base_url + f"/api/chat/stream/{stream_id}",
            headers={"Last-Event-ID": last_id},
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            rest = read_events(response)
    assert text_of(first) + text_of(rest) == ANSWER
    ids = [event.id for event in first + rest]
    assert ids == [f"{stream_id}:{n}" for n in range(len(ids) - 1)] + [f"{stream_id}:done"]
    assert rest[-2].event == "end"
    assert rest[-1].data == "[DONE]"
    assert len(replicas.upstream.exchanges) == 1
    served = replicas.served_by(2)
    assert len(served) == 2, served
    assert served[0] != served[1], served  # two replicas, one upstream call


def test_eventsource_reconnecting_to_its_url_resumes_on_the_other_replica(
    replicas: Replicas,
) -> None:
    """What a browser's EventSource does by itself: the same GET URL, with Last-Event-ID."""
    replicas.upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    url = replicas.nginx.base_url + "/api/chat/stream?message=hi"
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", url) as response:
            assert response.status_code == 200
            first = read_some(response, CUT_AFTER)
        with client.stream("GET", url, headers={"Last-Event-ID": first[-1].id}) as response:
            assert response.status_code == 200, response.read()
            rest = read_events(response)
        # And once it has [DONE], its next reconnect is told there is nothing more.
        done = client.get(url, headers={"Last-Event-ID": rest[-1].id})
    assert text_of(first) + text_of(rest) == ANSWER
    assert done.status_code == 204
    assert len(replicas.upstream.exchanges) == 1
    assert len(set(replicas.served_by(3))) == 2  # round-robin: the reconnect went elsewhere


def test_a_stop_sent_to_the_other_replica_closes_the_upstream_at_once(
    replicas: Replicas,
) -> None:
    long_answer = [f" w{i}" for i in range(400)]  # 20 s unless stopped
    replicas.upstream.queue(Reply(pieces=answer_pieces(long_answer), pause=PAUSE))
    producer, other = replicas.urls
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer + "/api/chat/stream", json={"message": "hi"}) as response,
    ):
        events = EventSource(response).iter_sse()
        stream_id = json.loads(next(events).data)["id"]
        asked_at = time.monotonic()
        stopped = client.post(other + f"/api/chat/{stream_id}/stop")
        rest = [SSEEvent(e.event, e.data, e.id) for e in events]
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"stream_id": stream_id, "status": "stopped"}
    exchange = replicas.upstream.exchanges[0]
    assert replicas.upstream.wait_for(lambda: exchange.disconnected_at is not None)
    assert exchange.disconnected_at is not None
    assert exchange.disconnected_at - asked_at < 2.0  # pub/sub: milliseconds, not a tick
    # The client still connected gets a clean end: `cancelled`, then [DONE].
    assert rest[-2].event == "end"
    assert rest[-2].json()["finish_reason"] == "cancelled"
    assert rest[-1].data == "[DONE]"
    # Stopping it again says it is over.
    again = httpx.post(other + f"/api/chat/{stream_id}/stop")
    assert again.json()["status"] == "finished"


def test_a_killed_producer_ends_its_resumed_stream_with_a_retryable_error(
    replicas: Replicas, tmp_path: Path
) -> None:
    long_answer = [f" w{i}" for i in range(400)]
    replicas.upstream.queue(Reply(pieces=answer_pieces(long_answer), pause=PAUSE))
    # A third replica, to be killed; the resuming client reads from one of the others.
    doomed, producer_url = start_replica(tmp_path, replicas.environment)
    other = replicas.urls[1]
    try:
        killed_at, ended_at, first, more, rest = resume_while_killing(doomed, producer_url, other)
    finally:
        doomed.kill()
        doomed.communicate()
    assert rest[-1].data == "[DONE]"
    failure = rest[-2]
    assert failure.event == "error"
    assert failure.json()["error"]["type"] == "stream_lost"
    assert failure.json()["error"]["retryable"] is True
    # The lease lapses within LEASE_SECONDS; the reader notices within a tick more.
    assert ended_at - killed_at < LEASE_SECONDS + 3.0
    received = text_of(first + more + rest[:-2])
    assert "".join(long_answer).startswith(received)
    assert len(received) > len(text_of(first))
    # A later resume of the same stream learns the same at once.
    stream_id = first[0].json()["id"]
    late = httpx.get(other + f"/api/chat/stream/{stream_id}", timeout=10)
    late_events = read_events(late)
    assert late_events[-2].json()["error"]["type"] == "stream_lost"
    # A position it never reached is refused once its lease is seen gone (a tick or two), not
    # after waiting out the store's lag for events (4.7 s here).
    asked_at = time.monotonic()
    ahead = httpx.get(
        other + f"/api/chat/stream/{stream_id}",
        params={"last_event_id": f"{stream_id}:9999"},
        timeout=10,
    )
    assert ahead.status_code == 422, ahead.text
    assert time.monotonic() - asked_at < 3.0


def resume_while_killing(
    doomed: subprocess.Popen[str], producer_url: str, other: str
) -> tuple[float, float, list[SSEEvent], list[SSEEvent], list[SSEEvent]]:
    """Start on `producer_url`, cut, resume on `other`, read a little, kill the producer, read
    the rest: (killed at, ended at, before the cut, read before the kill, read after it)."""
    with httpx.Client(timeout=30) as client:
        first = start_and_cut(client, producer_url + "/api/chat/stream")
        stream_id = first[0].json()["id"]
        with client.stream(
            "GET",
            other + f"/api/chat/stream/{stream_id}",
            params={"last_event_id": first[-1].id},
        ) as response:
            assert response.status_code == 200
            events = EventSource(response).iter_sse()
            more = [SSEEvent(e.event, e.data, e.id) for e in islice(events, 5)]  # live
            doomed.kill()
            killed_at = time.monotonic()
            rest = [SSEEvent(e.event, e.data, e.id) for e in events]
            ended_at = time.monotonic()
    return killed_at, ended_at, first, more, rest


def test_eventsource_in_chromium_reconnects_by_itself_and_gets_the_rest_from_the_other_replica(
    replicas: Replicas, page: Page
) -> None:
    """The browser's own auto-reconnect: its connection is cut by the network (a proxy in
    front of nginx that drops every connection), and it reconnects after `retry:` ms with
    `Last-Event-ID`, through nginx, to the other replica."""
    replicas.upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    network = CuttingProxy.start(replicas.nginx.port)
    try:
        page.route("**/favicon.ico", lambda route: route.abort())  # no stray requests
        page.goto(network.base_url + "/healthz")  # an origin to open the EventSource from
        page.evaluate(
            """() => {
                window.received = []; window.opened = 0; window.failed = 0; window.done = false;
                const source = new EventSource("/api/chat/stream?message=hi");
                source.onopen = () => { window.opened += 1; };
                source.onerror = () => { window.failed += 1; };
                source.onmessage = (event) => {
                    if (event.data === "[DONE]") { source.close(); window.done = true; return; }
                    window.received.push(JSON.parse(event.data).content);
                };
            }"""
        )
        page.wait_for_function(f"window.received.length >= {CUT_AFTER}")
        network.cut()
        page.wait_for_function("window.done", timeout=20_000)
        received, opened, failed = page.evaluate(
            "[window.received.join(''), window.opened, window.failed]"
        )
    finally:
        network.stop()
    assert received == ANSWER
    assert (opened, failed) == (2, 1)  # one cut, one reconnect, nothing else
    assert len(replicas.upstream.exchanges) == 1
    streams = [line for line in replicas.access_log(3) if "/api/chat/stream" in line]
    original = [line for line in streams if '"-"' in line]
    reconnect = [line for line in streams if '"-"' not in line]
    assert len(original) == len(reconnect) == 1, streams
    assert original[0].rsplit(" ", 1)[1] != reconnect[0].rsplit(" ", 1)[1], streams


def test_a_draining_replica_ends_the_streams_it_produces_after_the_shutdown_grace(
    replicas: Replicas, tmp_path: Path
) -> None:
    """Also those whose clients left: a reader elsewhere gets `server_shutting_down` and
    [DONE] when the grace runs out, and the process exits."""
    long_answer = [f" w{i}" for i in range(400)]
    replicas.upstream.queue(Reply(pieces=answer_pieces(long_answer), pause=PAUSE))
    draining, producer_url = start_replica(
        tmp_path, {**replicas.environment, "SHUTDOWN_GRACE_SECONDS": "2"}
    )
    try:
        with httpx.Client(timeout=30) as client:
            first = start_and_cut(client, producer_url + "/api/chat/stream")
            stream_id = first[0].json()["id"]
            with client.stream(
                "GET",
                replicas.urls[0] + f"/api/chat/stream/{stream_id}",
                headers={"Last-Event-ID": first[-1].id},
            ) as response:
                events = EventSource(response).iter_sse()
                more = [SSEEvent(e.event, e.data, e.id) for e in islice(events, 3)]
                draining.terminate()
                terminated_at = time.monotonic()
                rest = [SSEEvent(e.event, e.data, e.id) for e in events]
                ended_at = time.monotonic()
        draining.wait(15)  # it exits by itself (uvicorn re-raises SIGTERM once it is done)
    finally:
        draining.kill()
        draining.communicate()
    assert rest[-1].data == "[DONE]"
    assert rest[-2].json()["error"]["type"] == "server_shutting_down"
    assert 1.5 < ended_at - terminated_at < 2 + 5.0  # the grace, not at once
    received = text_of(first + more + rest[:-2])
    assert "".join(long_answer).startswith(received)


def test_a_replica_a_client_resumed_on_shuts_down_and_the_client_resumes_elsewhere(
    replicas: Replicas, tmp_path: Path
) -> None:
    """The stream goes on where it is produced, so the draining replica ends the client's body
    without a notice or an end marker, and the client resumes from another replica."""
    answer = [f" w{i}" for i in range(120)]  # ~6 s
    replicas.upstream.queue(Reply(pieces=answer_pieces(answer), pause=PAUSE))
    reader, reader_url = start_replica(
        tmp_path, {**replicas.environment, "SHUTDOWN_GRACE_SECONDS": "1"}
    )
    try:
        with httpx.Client(timeout=30) as client:
            first = start_and_cut(client, replicas.urls[0] + "/api/chat/stream")
            stream_id = first[0].json()["id"]
            with client.stream(
                "GET",
                reader_url + f"/api/chat/stream/{stream_id}",
                headers={"Last-Event-ID": first[-1].id},
            ) as response:
                events = EventSource(response).iter_sse()
                middle = [SSEEvent(e.event, e.data, e.id) for e in islice(events, 3)]
                reader.terminate()
                middle += [SSEEvent(e.event, e.data, e.id) for e in events]
            rest = read_events(
                client.get(
                    replicas.urls[1] + f"/api/chat/stream/{stream_id}",
                    headers={"Last-Event-ID": middle[-1].id},
                )
            )
        reader.wait(15)
    finally:
        reader.kill()
        reader.communicate()
    assert {event.event for event in middle} == {"message"}  # deltas only: no notice
    assert middle[-1].data != "[DONE]"
    assert text_of(first + middle + rest) == "".join(answer)
    assert rest[-1].data == "[DONE]"
    assert len(replicas.upstream.exchanges) == 1
