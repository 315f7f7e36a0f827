"""What a stock nginx in front of the service costs a stream, for each wire format.

    python -m bench.nginx_latency

Processes, all on 127.0.0.1 and stopped by PID at the end: the fake upstream
(`bench.upstream_server`, TOKENS one-token events PAUSE apart), the service as shipped
(`python -m service`: uvloop, httptools), the same app in uvicorn's h11 server, and Debian's
nginx with a stock `location / { proxy_pass ...; }` (`testkit/nginx.py`). Requests are sent
one at a time on raw sockets (HTTP/1.1, `Connection: close`) and every read is timestamped.

For each format (`?format=sse|ndjson|text`) and each path, over REQUESTS requests:

- first text: request sent -> first read carrying answer text (p50 / p95);
- spread: first -> last text read; a stream relayed as it is generated spreads over about
  (TOKENS - 1) x PAUSE, a buffered one arrives in one lump (spread ~0);
- reads with text: how many separate reads carried answer text (TOKENS when nothing merged).

Paths: direct to the service; stock nginx to the service; stock nginx to the h11 server (which
answers nginx's HTTP/1.0 with a close-delimited body, the case where nginx's
`proxy_buffering on` really applies and `X-Accel-Buffering: no` has to switch it off); and, as a
control, nginx told to ignore that header
(https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_ignore_headers) in front of
the h11 server: what a stream without the header gets.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass

from bench.processes import ServiceProcess
from bench.upstream_server import UpstreamProcess
from testkit.nginx import NginxProxy

TOKENS = 12
PAUSE = 0.015
REQUESTS = 20
CONTROL_REQUESTS = 5
FORMATS = ("sse", "ndjson", "text")
# What marks one piece of answer text in each format's body (the upstream's tokens are " w<i>").
MARKS = {"sse": b'"type":"delta"', "ndjson": b'"type":"delta"', "text": b" w"}


@dataclass
class Stream:
    first_text: float  # seconds from sending the request
    last_text: float
    text_reads: int
    pieces: int


def stream_once(port: int, fmt: str) -> Stream:
    """One request; the time of every read that carried answer text."""
    mark = MARKS[fmt]
    body = b'{"message": "bench"}'
    request = (
        b"POST /api/chat/stream?format=%s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (fmt.encode(), len(body), body)
    )
    started = time.perf_counter()
    times: list[float] = []
    pieces = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        head, tail = b"", b""
        while chunk := connection.recv(65536):
            now = time.perf_counter() - started
            if not head:  # the body starts after the response head
                tail += chunk
                if b"\r\n\r\n" not in tail:
                    continue
                head, chunk = tail.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 200"), head
                tail = b""
            window = tail + chunk
            found = window.count(mark)
            if found:
                times.append(now)
                pieces += found
            tail = window[-(len(mark) - 1) :]
    assert pieces == TOKENS, (fmt, pieces)
    return Stream(times[0], times[-1], len(times), pieces)


def row(label: str, streams: list[Stream]) -> str:
    firsts = sorted(s.first_text * 1000 for s in streams)
    p95 = firsts[max(0, int(0.95 * len(firsts)) - 1)]
    spread = statistics.median((s.last_text - s.first_text) * 1000 for s in streams)
    reads = statistics.median(s.text_reads for s in streams)
    return (
        f"  {label:<47} first text p50 {statistics.median(firsts):6.1f} ms, p95 {p95:6.1f} ms;"
        f" spread {spread:6.1f} ms; reads with text {reads:4.1f}/{TOKENS}"
    )


def main() -> None:
    upstream = UpstreamProcess(TOKENS, PAUSE)
    started: list[ServiceProcess | NginxProxy] = []
    try:
        shipped = ServiceProcess(upstream, "httptools")
        started.append(shipped)
        h11 = ServiceProcess(upstream, "h11")
        started.append(h11)
        stock = NginxProxy.start(shipped.port)
        started.append(stock)
        stock_h11 = NginxProxy.start(h11.port)
        started.append(stock_h11)
        ignoring = NginxProxy.start(
            h11.port, location_extra="proxy_ignore_headers X-Accel-Buffering;"
        )
        started.append(ignoring)
        paths = [
            ("direct to the service (httptools)", shipped.port, REQUESTS),
            ("stock nginx -> service (httptools)", stock.port, REQUESTS),
            ("stock nginx -> service (h11, close-delimited)", stock_h11.port, REQUESTS),
            ("control: nginx ignoring X-Accel-Buffering, h11", ignoring.port, CONTROL_REQUESTS),
        ]
        ideal = (TOKENS - 1) * PAUSE * 1000
        print(
            f"{TOKENS} tokens {PAUSE * 1000:.0f} ms apart per answer (ideal spread {ideal:.0f} ms),"
            f" requests one at a time, {REQUESTS} per path ({CONTROL_REQUESTS} for the control)"
        )
        for fmt in FORMATS:
            print(f"format={fmt}")
            for _, port, _ in paths:
                stream_once(port, fmt)  # warm up each path
            for label, port, count in paths:
                print(row(label, [stream_once(port, fmt) for _ in range(count)]))
    finally:
        for process in reversed(started):
            process.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
