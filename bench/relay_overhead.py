"""The service's own cost: CPU per relayed token, and time to first token under concurrency.

    python -m bench.relay_overhead            # as shipped: REDIS_URL unset
    python -m bench.relay_overhead --redis    # resumable streams on a redis-server it starts

Three processes: the fake upstream (`bench.upstream_server`), the service (`python -m service`,
uvloop and httptools, CPU read from /proc), and the clients here. Each figure is printed for both
routes: the service's own `/api/chat/stream` (decoded, re-encoded as its events) and the OpenAI
passthrough `/v1/chat/completions` (the upstream's bytes relayed per event, issue #8):

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
from typing import NamedTuple

import uvloop

from bench.processes import ServiceProcess
from bench.upstream_server import UpstreamProcess
from testkit.redis_server import RedisServer


class Route(NamedTuple):
    name: str
    path: bytes
    # Counted in the answer: once per relayed text event.
    mark: bytes
    body: bytes


# The fake upstream reads no body; the service checks it.
NATIVE = Route(
    "/api/chat/stream",
    b"/api/chat/stream",
    b'"type":"delta"',
    json.dumps({"prompt": "bench"}).encode(),
)
PASSTHROUGH = Route(
    "/v1/chat/completions",
    b"/v1/chat/completions",
    b'"content":" w',  # the upstream's own bytes, relayed
    json.dumps(
        {"model": "bench", "messages": [{"role": "user", "content": "bench"}], "stream": True}
    ).encode(),
)
ROUTES = (NATIVE, PASSTHROUGH)


async def stream_once(port: int, route: Route) -> tuple[float, int]:
    """(seconds to the first text, text events received) for one streamed answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (route.path, len(route.body), route.body)
    )
    first_text = 0.0
    found = 0
    tail = b""
    mark = route.mark
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


async def cpu_per_token(environment: dict[str, str], tokens: int = 20_000, runs: int = 3) -> None:
    """The median of `runs` bursts per route, the routes taking turns on one service."""
    upstream = UpstreamProcess(tokens, 0)
    service = ServiceProcess(upstream, **environment)
    try:
        for route in ROUTES:
            await stream_once(service.port, route)  # warm up
        samples: dict[str, list[float]] = {route.name: [] for route in ROUTES}
        for _ in range(runs):
            for route in ROUTES:
                before = service.cpu()
                _, received = await stream_once(service.port, route)
                used = service.cpu() - before
                assert received == tokens, (route.name, received)
                samples[route.name].append(used / tokens * 1e6)
        print(f"service CPU per relayed token (burst of {tokens}, median of {runs}):")
        for name, values in samples.items():
            print(f"  {name:22} {statistics.median(values):6.1f} µs")
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
        print(f"{streams} concurrent streams, {tokens} tokens each, {pause * 1000:.0f} ms apart:")
        direct = await asyncio.gather(
            *(stream_once(upstream_port, PASSTHROUGH) for _ in range(streams))
        )
        print(f"  TTFT calling the upstream directly: {percentiles([f * 1000 for f, _ in direct])}")
        for route in ROUTES:
            await stream_once(service.port, route)  # warm up
            before = service.cpu()
            relayed = await asyncio.gather(
                *(stream_once(service.port, route) for _ in range(streams))
            )
            used = service.cpu() - before
            assert all(count == tokens for _, count in relayed), [c for _, c in relayed]
            ttft = percentiles([f * 1000 for f, _ in relayed])
            print(f"  {route.name}: TTFT {ttft}")
            print(
                f"  {route.name}: CPU per relayed token {used / (streams * tokens) * 1e6:6.1f} µs"
            )
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
