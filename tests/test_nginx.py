"""The service behind a stock nginx (`testkit/nginx.py`): every wire format streams.

A stock `proxy_pass` keeps `proxy_buffering on`, which lets nginx hold a response until its
buffers fill (https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_buffering). These
tests read each answer from the socket through nginx, timestamp every piece, and check against
the fake upstream's own clock that the text arrived while the model was still producing it,
piece by piece, with the exact text, for SSE, NDJSON and plain text, chosen by `format=` and by
`Accept`, over POST and GET; that first-text latency through nginx stays close to direct; that
heartbeats keep a silent stream open past nginx's read timeout; and that a client leaving
through nginx still closes the upstream request. Control experiments show the timing check does
catch a buffering nginx, that the service's `X-Accel-Buffering: no` is what prevents it, and that
the read timeout is really in force.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.nginx import NginxFactory
from testkit.services import (
    TEST_KEY,
    RunningService,
    ServiceFactory,
    make_settings,
    start_service,
    stop_service,
)

# Paced like a slow model: each token is its own upstream write, PAUSE seconds apart.
PAUSE = 0.08
TOKENS = ["Hel", "lo, wö", "rld 🌍", '\nline "two"', " data: x", "!"]
ANSWER = "".join(TOKENS)
CONTENT_TYPES = {
    "sse": "text/event-stream",
    "ndjson": "application/x-ndjson",
    "text": "text/plain",
}
ACCEPT = CONTENT_TYPES  # the media type that asks for each format


@dataclass
class Piece:
    """One unit of the answer as the client parsed it, and when its last byte was read."""

    at: float  # time.monotonic(), the fake upstream's clock
    kind: str  # start | delta | end | error | done | ping
    content: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Received:
    status: int
    headers: httpx.Headers
    body: bytes
    sent_at: float
    pieces: list[Piece]
    reads: list[tuple[float, bytes]]

    def deltas(self) -> list[Piece]:
        return [p for p in self.pieces if p.kind == "delta" and p.content]

    def text(self) -> str:
        return "".join(p.content for p in self.pieces if p.kind == "delta")


def _sse_piece(block: bytes, at: float) -> Piece:
    fields: dict[str, str] = {}
    for line in block.decode().split("\n"):
        if line.startswith(":"):
            return Piece(at, "ping")
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    assert "data" in fields, block
    assert fields.get("id"), f"SSE event without an id: {block!r}"
    if fields["data"] == "[DONE]":
        return Piece(at, "done")
    data = json.loads(fields["data"])
    if data["type"] != "delta":
        assert fields.get("event") == data["type"], block
    return Piece(at, data["type"], data["content"], data)


def _ndjson_piece(line: bytes, at: float) -> Piece:
    data = json.loads(line)
    assert isinstance(data, dict), line
    if data.get("type") == "ping":
        return Piece(at, "ping")
    return Piece(at, data["type"], data.get("content", ""), data)


def read_stream(
    client: httpx.Client,
    method: str,
    url: str,
    fmt: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: dict[str, Any] | None = None,
    stop_after_first_delta: bool = False,
) -> Received:
    """Stream one answer, timestamping each read from the socket (`iter_raw`: no decoding).

    A piece's time is that of the read that completed it, so pieces coalesced by a buffer
    share one time. With `stop_after_first_delta` the response is closed at the first text.
    """
    sent_at = time.monotonic()
    separator = {"sse": b"\n\n", "ndjson": b"\n"}.get(fmt)
    pieces: list[Piece] = []
    reads: list[tuple[float, bytes]] = []
    pending = b""
    with client.stream(method, url, headers=headers, json=json_body) as response:
        if response.status_code != 200:
            response.read()
            return Received(
                response.status_code, response.headers, response.content, sent_at, [], []
            )
        for chunk in response.iter_raw():
            at = time.monotonic()
            reads.append((at, chunk))
            if separator is None:  # text/plain: the bytes are the answer
                pending += chunk
                try:
                    text = pending.decode()
                except UnicodeDecodeError:  # a character split across reads
                    continue
                pending = b""
                pieces.append(Piece(at, "delta", text))
            else:
                pending += chunk
                *complete, pending = pending.split(separator)
                for unit in complete:
                    if unit:
                        parse = _sse_piece if fmt == "sse" else _ndjson_piece
                        pieces.append(parse(unit, at))
            if stop_after_first_delta and any(p.kind == "delta" and p.content for p in pieces):
                break
        if not stop_after_first_delta:
            assert pending == b"", f"stream ended inside a unit: {pending!r}"
    body = b"".join(chunk for _, chunk in reads)
    return Received(200, response.headers, body, sent_at, pieces, reads)


def check_answer(received: Received, fmt: str) -> None:
    """The exact answer, framed as the format promises."""
    assert received.status == 200, received.body
    assert received.headers["content-type"].startswith(CONTENT_TYPES[fmt])
    assert received.text() == ANSWER
    kinds = [p.kind for p in received.pieces if p.kind != "ping"]
    if fmt == "text":
        assert received.body == ANSWER.encode()
        return
    assert kinds[0] == "start", kinds
    assert set(kinds[1:-2] if fmt == "sse" else kinds[1:-1]) == {"delta"}, kinds
    if fmt == "sse":
        assert kinds[-2:] == ["end", "done"], kinds
    else:
        assert kinds[-1] == "end", kinds
        assert b"[DONE]" not in received.body
        assert received.body.endswith(b"\n")
    end = next(p for p in received.pieces if p.kind == "end")
    assert end.data["finish_reason"] == "stop"


def check_streamed(received: Received, upstream_started_at: float) -> None:
    """The text arrived piece by piece while the model was producing it, not in one lump.

    The fake upstream writes token i at `upstream_started_at + i * PAUSE` (i = 1..n). A proxy
    that buffered the answer would deliver every delta at (or after) the last one.
    """
    deltas = received.deltas()
    n = len(TOKENS)
    generation = n * PAUSE
    first, last = deltas[0].at, deltas[-1].at
    timeline = [round(p.at - upstream_started_at, 3) for p in deltas]
    # The first text came before half of the answer had even been generated...
    assert first - upstream_started_at < generation / 2, timeline
    # ...the deltas spread over the generation as the upstream paced them...
    assert last - first > 0.5 * (n - 1) * PAUSE, timeline
    # ...in separate reads (a generous half: a stalled box may merge a few).
    assert len({p.at for p in deltas}) >= n // 2 + 1, timeline


CASES = [
    # (id, method, format query, Accept, expected format)
    ("post-default-sse", "POST", None, None, "sse"),
    ("get-accept-sse", "GET", None, ACCEPT["sse"], "sse"),
    ("post-format-ndjson", "POST", "ndjson", None, "ndjson"),
    ("post-accept-ndjson", "POST", None, ACCEPT["ndjson"], "ndjson"),
    ("get-format-text", "GET", "text", None, "text"),
    ("post-accept-text", "POST", None, ACCEPT["text"], "text"),
]


def request_args(
    method: str, fmt_query: str | None, accept: str | None
) -> tuple[str, dict[str, str], dict[str, Any] | None]:
    """(path with query, headers, JSON body) for one way of asking for a format."""
    params: dict[str, str] = {}
    if fmt_query:
        params["format"] = fmt_query
    body: dict[str, Any] | None = {"message": "hello"}
    if method == "GET":
        params["message"] = "hello"
        body = None
    query = "?" + str(httpx.QueryParams(params)) if params else ""
    headers = {"Accept": accept} if accept else {}
    return "/api/chat/stream" + query, headers, body


@pytest.mark.parametrize(
    ("method", "fmt_query", "accept", "fmt"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_format_streams_exactly_through_stock_nginx(
    service: RunningService,
    upstream: FakeUpstream,
    nginx_factory: NginxFactory,
    method: str,
    fmt_query: str | None,
    accept: str | None,
    fmt: str,
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS, usage=False), pause=PAUSE))
    proxy = nginx_factory(service.host_port[1])
    path, headers, body = request_args(method, fmt_query, accept)
    with httpx.Client(timeout=10) as client:
        received = read_stream(client, method, proxy + path, fmt, headers=headers, json_body=body)
    check_answer(received, fmt)
    assert len(upstream.exchanges) == 1
    check_streamed(received, upstream.exchanges[0].received_at)
    # nginx consumed the service's buffering switch rather than passing it on:
    # https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_hide_header
    assert "x-accel-buffering" not in received.headers
    assert received.headers["server"].startswith("nginx")


@pytest.mark.parametrize("fmt", ["sse", "ndjson", "text"])
def test_first_text_latency_through_nginx_is_close_to_direct(
    service: RunningService, upstream: FakeUpstream, nginx_factory: NginxFactory, fmt: str
) -> None:
    """Median time to the first text over a few alternating requests: nginx adds little.

    The bound (100 ms) is generous for a noisy machine, yet far below what buffering costs:
    the rest of the answer takes 8 x 50 ms after the first token, so a buffering proxy would
    add ~0.4 s.
    """
    upstream.default_reply = Reply(pieces=answer_pieces(["x"] * 9, usage=False), pause=0.05)
    proxy = nginx_factory(service.host_port[1])
    path = f"/api/chat/stream?format={fmt}"
    latencies: dict[str, list[float]] = {"direct": [], "nginx": []}
    with httpx.Client(timeout=10) as client:
        for _ in range(6):  # the first pair warms up both paths and is not counted
            for name, base in (("direct", service.base_url), ("nginx", proxy)):
                received = read_stream(
                    client,
                    "POST",
                    base + path,
                    fmt,
                    json_body={"message": "hi"},
                    stop_after_first_delta=True,
                )
                assert received.status == 200, received.body
                first = received.deltas()[0]
                assert first.content.startswith("x")
                latencies[name].append(first.at - received.sent_at)
    latencies = {name: values[1:] for name, values in latencies.items()}
    direct, proxied = (statistics.median(latencies[name]) for name in ("direct", "nginx"))
    assert proxied - direct < 0.1, latencies


def test_client_leaving_through_nginx_closes_the_upstream(
    service: RunningService, upstream: FakeUpstream, nginx_factory: NginxFactory
) -> None:
    """nginx closes its connection to the service when the client leaves (the default
    `proxy_ignore_client_abort off`,
    https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_ignore_client_abort), so the
    service's cancellation still reaches the model: the upstream request is closed long before
    the 50-token answer would have ended (5 s)."""
    upstream.queue(Reply(pieces=answer_pieces(["t"] * 50), pause=0.1))
    proxy = nginx_factory(service.host_port[1])
    with httpx.Client(timeout=10) as client:
        received = read_stream(
            client,
            "POST",
            proxy + "/api/chat/stream",
            "sse",
            json_body={"message": "hi"},
            stop_after_first_delta=True,
        )
    left_at = time.monotonic()
    assert received.deltas()[0].content == "t"
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None, 2.0)
    closed_at = upstream.exchanges[0].disconnected_at
    assert closed_at is not None
    assert closed_at - left_at < 1.0
    assert not upstream.exchanges[0].completed


# -- a silent model: heartbeats keep nginx's read timeout from cutting the stream ----------------

SILENCE = 1.1  # the model thinks this long between its two writes
# nginx's proxy_read_timeout here, shorter than the silence. Not tighter: nginx moves a pending
# timer only when that shifts it by 300 ms or more (NGX_TIMER_LAZY_DELAY in
# https://github.com/nginx/nginx/blob/master/src/event/ngx_event_timer.h), so the timeout
# really in force after a read is anywhere from this minus 300 ms to this.
READ_TIMEOUT = "800ms"


def slow_model(upstream: FakeUpstream) -> None:
    """Two upstream writes SILENCE apart: "slow" first, then " answer", [DONE] and the body's
    end."""
    pieces = answer_pieces(["slow", " answer"], usage=False)
    upstream.default_reply = Reply(
        pieces=[pieces[0] + pieces[1], b"".join(pieces[2:])], pause=SILENCE
    )


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_heartbeats_keep_a_silent_stream_open_through_nginx(
    service_factory: ServiceFactory,
    upstream: FakeUpstream,
    nginx_factory: NginxFactory,
    fmt: str,
) -> None:
    """nginx cuts a response after `proxy_read_timeout` without a read from the service
    (https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_read_timeout); the SSE
    `: ping` comment (and the NDJSON ping line, when enabled) reset it, and reach the client
    while the model is silent."""
    slow_model(upstream)
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
        heartbeat_seconds=0.1,
        ndjson_heartbeat=True,
    )
    proxy = nginx_factory(running.host_port[1], f"proxy_read_timeout {READ_TIMEOUT};")
    with httpx.Client(timeout=10) as client:
        received = read_stream(
            client, "POST", f"{proxy}/api/chat/stream?format={fmt}", fmt, json_body={"message": "?"}
        )
    assert received.status == 200, received.body
    assert received.text() == "slow answer"
    assert [p.kind for p in received.pieces if p.kind != "ping"][-1] in {"done", "end"}
    first, second = received.deltas()
    pings = [p.at for p in received.pieces if p.kind == "ping" and first.at < p.at < second.at]
    assert len(pings) >= 2, [(p.kind, round(p.at - received.sent_at, 3)) for p in received.pieces]


def test_control_text_has_no_heartbeat_so_nginx_read_timeout_cuts_it(
    service_factory: ServiceFactory, upstream: FakeUpstream, nginx_factory: NginxFactory
) -> None:
    """text/plain cannot carry a heartbeat: a model silent longer than `proxy_read_timeout`
    gets the stream cut mid-answer by nginx. So the same timeout is really in force above, and
    a deployment serving text/plain needs `proxy_read_timeout` above the model's longest
    silence (UPSTREAM_READ_TIMEOUT_SECONDS), not just above HEARTBEAT_SECONDS."""
    slow_model(upstream)
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
        heartbeat_seconds=0.1,
    )
    proxy = nginx_factory(running.host_port[1], f"proxy_read_timeout {READ_TIMEOUT};")
    chunks: list[bytes] = []

    def read_all(response: httpx.Response) -> None:
        for chunk in response.iter_raw():
            chunks.append(chunk)

    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{proxy}/api/chat/stream?format=text", json={"message": "?"}) as r,
    ):
        assert r.status_code == 200
        # nginx closes the client connection without the final chunk: an incomplete body.
        with pytest.raises(httpx.RemoteProtocolError):
            read_all(r)
    assert b"".join(chunks) == b"slow"


# -- control: the check catches a buffering nginx, and the header is what prevents it ----------


@contextmanager
def service_answering_http10_plainly(upstream: FakeUpstream) -> Iterator[int]:
    """The service in uvicorn's h11 server; yields its port.

    A stock nginx speaks HTTP/1.0 to the upstream. httptools (what the service ships with)
    answers it with chunked encoding anyway, and nginx passes each complete chunk on even while
    buffering; h11 answers as HTTP/1.0 requires, with a body delimited by closing the
    connection, so nginx really buffers it unless told not to. That is the case where
    `X-Accel-Buffering: no` has to do the work, as with any server that does the same.
    """
    settings = make_settings(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
    )
    running = start_service(settings, http="h11")
    try:
        yield running.host_port[1]
    finally:
        stop_service(running)


@pytest.mark.parametrize("fmt", ["sse", "ndjson", "text"])
def test_the_header_keeps_stock_nginx_streaming_a_close_delimited_answer(
    upstream: FakeUpstream, nginx_factory: NginxFactory, fmt: str
) -> None:
    upstream.default_reply = Reply(pieces=answer_pieces(TOKENS, usage=False), pause=PAUSE)
    with service_answering_http10_plainly(upstream) as port, httpx.Client(timeout=10) as client:
        proxy = nginx_factory(port)
        received = read_stream(
            client,
            "POST",
            f"{proxy}/api/chat/stream?format={fmt}",
            fmt,
            json_body={"message": "hi"},
        )
        check_answer(received, fmt)
        check_streamed(received, upstream.exchanges[-1].received_at)


def test_control_nginx_ignoring_the_header_buffers_and_the_check_fails(
    upstream: FakeUpstream, nginx_factory: NginxFactory
) -> None:
    """Without the header (nginx told to ignore it) the same answer comes in one lump."""
    upstream.default_reply = Reply(pieces=answer_pieces(TOKENS, usage=False), pause=PAUSE)
    with service_answering_http10_plainly(upstream) as port, httpx.Client(timeout=10) as client:
        # https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_ignore_headers
        proxy = nginx_factory(port, "proxy_ignore_headers X-Accel-Buffering;")
        received = read_stream(
            client,
            "POST",
            f"{proxy}/api/chat/stream?format=text",
            "text",
            json_body={"message": "hi"},
        )
        check_answer(received, "text")
        with pytest.raises(AssertionError):
            check_streamed(received, upstream.exchanges[-1].received_at)
        deltas = received.deltas()
        assert deltas[0].at - upstream.exchanges[-1].received_at >= len(TOKENS) * PAUSE
