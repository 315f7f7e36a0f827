"""Issue #11, the client side: giant heads, slowloris, and clients that never read, from raw
sockets against the service as it ships (`python -m service`, or the same uvicorn configuration
in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event
from testkit.raw_client import open_stream, read_until
from testkit.service_process import start_service_process, stop_and_collect
from testkit.services import TEST_KEY, RunningService


@dataclass(frozen=True)
class Address:
    host_port: tuple[str, int]

    @classmethod
    def of(cls, base_url: str) -> Address:
        host, port = base_url.removeprefix("http://").split(":")
        return cls((host, int(port)))


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float  # from the first byte sent to the connection's end, as the client saw it

    def error_type(self) -> str:
        kind: str = json.loads(self.body)["error"]["type"]
        return kind


def exchange(host_port: tuple[str, int], raw: bytes, timeout: float = 30) -> Answer:
    """Send `raw` (from a thread: the server may stop reading) and read until the connection
    ends; the answer as the client saw it."""
    sock = socket.create_connection(host_port)
    sock.settimeout(timeout)

    def send() -> None:
        with contextlib.suppress(OSError):  # refused mid-send: the answer tells why
            sock.sendall(raw)

    sender = threading.Thread(target=send, daemon=True)
    started = time.monotonic()
    sender.start()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        seconds = time.monotonic() - started
        sock.close()
        sender.join(10)
    head, _, body = received.partition(b"\r\n\r\n")
    return Answer(int(head.split(b" ", 2)[1]) if head else 0, body, seconds)


def start_upstream_process(
    upstream: FakeUpstream, cwd: Path, **environment: str
) -> tuple[subprocess.Popen[str], str]:
    """`python -m service` on the fake upstream, no SDK retries, and `environment`."""
    return start_service_process(
        cwd,
        http="httptools",
        capture=True,
        OPENAI_API_KEY=TEST_KEY,
        OPENAI_BASE_URL=upstream.base_url,
        UPSTREAM_MAX_RETRIES="0",
        **environment,
    )


def get(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: test\r\n" + b"".join(headers) + b"\r\n"


def chunked(body: bytes, *, chunk_bytes: int = 16, trailer: bytes = b"") -> bytes:
    """A chat request whose body is sent in chunked encoding, with an optional trailer."""
    chunks = [body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)]
    return (
        b"POST /api/chat/stream?format=text HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
        + b"0\r\n"
        + (trailer + b"\r\n" if trailer else b"")
        + b"\r\n"
    )


# -- giant heads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "error_type"),
    [
        (get(b"/healthz?" + b"q" * 100_000), 414, "uri_too_long"),
        (get(b"/healthz", b"X-Big: " + b"a" * 100_000 + b"\r\n"), 431, "request_head_too_large"),
        (get(b"/healthz", b"X-Big: " + b"a" * 16_000_000 + b"\r\n"), 431, "request_head_too_large"),
        (
            get(b"/healthz", *[b"X-%d: v\r\n" % i for i in range(20_000)]),
            431,
            "request_head_too_large",
        ),
        (chunked(b"{", trailer=b"X-T: " + b"a" * 16_000_000), 431, "request_head_too_large"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 10, 400, "invalid_request"),
    ],
    ids=[
        "100-KB-url",
        "100-KB-header",
        "16-MB-header",
        "20000-headers",
        "16-MB-trailer",
        "not-http",
    ],
)
def test_oversized_or_broken_heads_get_a_json_refusal(
    service: RunningService, raw: bytes, status: int, error_type: str
) -> None:
    answer = exchange(service.host_port, raw)
    assert (answer.status, answer.error_type()) == (status, error_type)
    assert answer.seconds < 5
    assert httpx.get(service.base_url + "/healthz").status_code == 200


def test_a_chunked_body_with_small_chunks_and_a_trailer_is_served(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(["Hi"])))
    body = json.dumps({"prompt": "x" * 20_000}).encode()  # 1,250 chunks of 16 bytes
    answer = exchange(service.host_port, chunked(body, trailer=b"X-Checksum: 1234"))
    assert (answer.status, answer.body) == (200, b"2\r\nHi\r\n0\r\n\r\n")


def test_a_head_just_under_the_limit_is_served(service: RunningService) -> None:
    padding = b"a" * (65_536 - 200)
    answer = exchange(
        service.host_port,
        get(b"/healthz", b"X-Pad: " + padding + b"\r\n", b"Connection: close\r\n"),
    )
    assert answer.status == 200


def vm_high_water_mark_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.server
def test_ten_concurrent_50_mb_heads_and_trailers_leave_memory_bounded(tmp_path: Path) -> None:
    # Issue #11: RSS went from 80 to 452 MB. Measured with the limits: +1 MB.
    process, base_url = start_service_process(tmp_path)
    address = Address.of(base_url)
    bomb = b"a" * 50_000_000
    heads = [get(b"/healthz", b"X-Big: " + bomb + b"\r\n"), chunked(b"{", trailer=b"X-T: " + bomb)]
    try:
        before = vm_high_water_mark_kb(process.pid)
        answers: list[Answer] = []
        attackers = [
            threading.Thread(
                target=lambda raw=raw: answers.append(exchange(address.host_port, raw))
            )
            for raw in heads * 5
        ]
        for attacker in attackers:
            attacker.start()
        for attacker in attackers:
            attacker.join(60)
        grown_mb = (vm_high_water_mark_kb(process.pid) - before) / 1024
        assert [answer.status for answer in answers] == [431] * 10
        assert grown_mb < 30, grown_mb
        assert httpx.get(base_url + "/healthz").status_code == 200
    finally:
        stop_and_collect(process)


# -- slowloris -----------------------------------------------------------------------------

HEAD_TIMEOUT, BODY_TIMEOUT = 1.0, 2.0


@dataclass
class SlowClient:
    kind: str
    status: int = 0
    error_type: str = ""
    waited: float = 0.0  # from the start of its timeout to the end of the connection


async def slow_client(host: str, port: int, kind: str) -> SlowClient:
    """One slowloris connection: `idle` sends nothing, `head` trickles its head, `body` sends
    its head at once and trickles its body; each at one byte per 0.3 s until the server ends
    the connection."""
    result = SlowClient(kind)
    started = time.monotonic()  # the server's clock starts when it accepts: later
    reader, writer = await asyncio.open_connection(host, port)
    head = b"POST /api/chat/stream HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"
    trickle = {"idle": b"", "head": head, "body": b"{" * 1000}[kind]
    if kind == "body":
        writer.write(head)
        started = time.monotonic()

    async def send_slowly() -> None:
        for byte in trickle:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.3)

    sender = asyncio.ensure_future(send_slowly())
    try:
        received = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        result.waited = time.monotonic() - started
        sender.cancel()
        writer.close()
    status_line, _, body = received.partition(b"\r\n\r\n")
    result.status = int(status_line.split(b" ")[1])
    result.error_type = json.loads(body)["error"]["type"]
    return result


async def test_slowloris_connections_are_closed_in_time_and_streams_go_on(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    # `python -m service` in its own process: the 300 clients here must not share its GIL,
    # or their own lag (a head written late) would read as the server's.
    process, base_url = start_upstream_process(
        upstream,
        tmp_path,
        REQUEST_HEAD_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
        REQUEST_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    )
    tokens = [f" t{index}" for index in range(30)]
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=0.1))  # ~3 s, past both timeouts
    host, port = Address.of(base_url).host_port

    async def normal_stream() -> str:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            response = await client.post(
                "/api/chat/stream", params={"format": "text"}, json={"prompt": "hi"}
            )
            return response.text

    try:
        attackers = [slow_client(host, port, kind) for kind in ("idle", "head", "body") * 100]
        normal = asyncio.ensure_future(normal_stream())
        slow = await asyncio.gather(*attackers)
        answer = await normal
    finally:
        stop_and_collect(process)
    assert answer == "".join(tokens)
    for client in slow:
        assert (client.status, client.error_type) == (408, "request_timeout")
        timeout = BODY_TIMEOUT if client.kind == "body" else HEAD_TIMEOUT
        assert timeout - 0.1 < client.waited < timeout + 1.0, client


# -- clients that never read ---------------------------------------------------------------


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.server
def test_clients_that_never_read_lose_their_socket_at_the_send_timeout(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    process, base_url = start_upstream_process(upstream, tmp_path, SEND_TIMEOUT_SECONDS="1")
    running = Address.of(base_url)
    stalled: list[socket.socket] = []
    try:
        upstream.queue(Reply(pieces=answer_pieces(["warm", " up"])))
        assert httpx.post(base_url + "/api/chat/stream", json={"prompt": "hi"}).status_code == 200
        baseline = open_descriptors(process.pid)
        # Far more than socket buffers hold (one bytes object repeated: no memory cost here).
        huge = [chunk_event(content="x" * 2000)] * 50_000
        upstream.queue(*[Reply(pieces=huge) for _ in range(20)])
        peak = baseline
        for _ in range(20):
            sock = open_stream(running.host_port, {"prompt": "hi"}, receive_buffer=4096)
            read_until(sock, b'"type":"delta"', 1)  # then it reads nothing more, and stays
            stalled.append(sock)
            peak = max(peak, open_descriptors(process.pid))
        exchanges = upstream.exchanges[1:]
        assert peak >= baseline + 10  # streams were open: a client and an upstream socket each
        assert upstream.wait_for(
            lambda: all(exchange.disconnected_at is not None for exchange in exchanges), 15
        )
        dropped_at = max(exchange.disconnected_at or 0.0 for exchange in exchanges)
        assert upstream.wait_for(lambda: open_descriptors(process.pid) <= baseline, 3)
        assert time.monotonic() - dropped_at < 1.0
        for sock in stalled:  # the connection is over: what is left to read ends at once
            sock.settimeout(2)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(1 << 20):
                    pass
    finally:
        for sock in stalled:
            sock.close()
        _, stderr = stop_and_collect(process)
    assert "client_send_timeout" in stderr
    assert "without completing response" not in stderr
