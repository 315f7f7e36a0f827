"""The service's own cost: CPU per relayed token, and time to first token under concurrency.

    python -m bench.relay_overhead            # as shipped: REDIS_URL unset
    python -m bench.relay_overhead --redis    # resumable streams on a redis-server it starts

Three processes: the fake upstream (`bench.upstream_server`), the service (`python -m service`,
uvloop and httptools, CPU read from /proc), and the clients here. Figures printed:

1. CPU per token relayed: one stream of 20,000 tokens that the upstream sends at once.
2. TTFT at 100 concurrent streams, the upstream pacing 100 tokens per stream 20 ms apart (the
   service relays 5,000 tokens/s): as the clients see it through the service, and calling the
   upstream directly; plus the service's CPU per token while doing it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from bench.processes import ServiceProcess
from bench.upstream_server import UpstreamProcess
from testkit.redis_server import RedisServer

SERVICE_PATH = b"/api/chat/stream"
SERVICE_MARK = b'"type":"delta"'
DIRECT_PATH = b"/v1/chat/completions"
DIRECT_MARK = b'"content": " w'


async def stream_once(port: int, path: bytes, mark: bytes) -> tuple[float, int]:
    """(seconds to the first text, text events received) for one streamed answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"prompt": "bench"}).encode()  # the fake upstream does not read it
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)
    )
    first_text = 0.0
    found = 0
    tail = b""
    while chunk := await reader.read(65536):
        window = tail + chunk
        count = window.count(mark)
        if count and not first_text:
            first_text = time.perf_counter() - started
        found += count
        tail = window[-(len(mark) - 1) :]
    writer.close()
    return first_text, found


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, int(0.95 * len(ordered)) - 1)]
    return f"p50 {statistics.median(ordered):6.1f} ms, p95 {p95:6.1f} ms, max {ordered[-1]:6.1f} ms"


async def cpu_per_token(environment: dict[str, str], tokens: int = 20_000) -> None:
    upstream = UpstreamProcess(tokens, 0)
    service = ServiceProcess(upstream, **environment)
    try:
        await stream_once(service.port, SERVICE_PATH, SERVICE_MARK)  # warm up
        before = service.cpu()
        _, received = await stream_once(service.port, SERVICE_PATH, SERVICE_MARK)
        used = service.cpu() - before
        assert received == tokens, received
        per_token = used / tokens * 1e6
        print(f"service CPU per relayed token (burst): {per_token:6.1f} µs ({tokens} tokens)")
    finally:
        service.stop()
        upstream.stop()


async def concurrent_ttft(
    environment: dict[str, str], streams: int = 100, tokens: int = 100, pause: float = 0.02
) -> None:
    upstream = UpstreamProcess(tokens, pause)
    service = ServiceProcess(upstream, **environment)
    upstream_port = int(upstream.base_url.rsplit(":", 1)[1])
    try:
        await stream_once(service.port, SERVICE_PATH, SERVICE_MARK)  # warm up
        direct = await asyncio.gather(
            *(stream_once(upstream_port, DIRECT_PATH, DIRECT_MARK) for _ in range(streams))
        )
        before = service.cpu()
        relayed = await asyncio.gather(
            *(stream_once(service.port, SERVICE_PATH, SERVICE_MARK) for _ in range(streams))
        )
        used = service.cpu() - before
        assert all(count == tokens for _, count in relayed), [c for _, c in relayed]
        print(f"{streams} concurrent streams, {tokens} tokens each, {pause * 1000:.0f} ms apart:")
        print(f"  TTFT calling the upstream directly: {percentiles([f * 1000 for f, _ in direct])}")
        print(
            f"  TTFT through the service:           {percentiles([f * 1000 for f, _ in relayed])}"
        )
        print(f"  service CPU per relayed token:      {used / (streams * tokens) * 1e6:6.1f} µs")
    finally:
        service.stop()
        upstream.stop()


async def main(environment: dict[str, str]) -> None:
    await cpu_per_token(environment)
    await concurrent_ttft(environment)


def run() -> None:
    if "--redis" not in sys.argv[1:]:
        uvloop.run(main({}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        redis = RedisServer.start(Path(directory))
        try:
            print(f"resumable streams on, REDIS_URL={redis.url}")
            uvloop.run(main({"REDIS_URL": redis.url}))
        finally:
            redis.stop()


if __name__ == "__main__":
    run()
