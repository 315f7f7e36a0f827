"""What resumable streams add per token, without HTTP around it: the events of synthetic
streams consumed and SSE-encoded directly (as without REDIS_URL), and through the resumable
path (a producer task, the client reading from its memory, the writer storing to a real
redis-server that this starts). CPU is this process's (what the service pays), plus
redis-server's own.

    python -m bench.resume_overhead

Figures: a burst (one stream of 20,000 tokens available at once), and 100 concurrent streams of
100 tokens 20 ms apart (the relay benchmark's live case). The relay benchmark
(`bench.relay_overhead --redis`) measures the same through the whole service, where the noise of
a shared machine is larger than the difference.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import uvloop

from bench.processes import process_cpu_seconds
from service.chat import OpenedStream
from service.events import (
    ResponseBatch,
    ResponseBatches,
    StreamEnded,
    StreamMetrics,
    StreamStarted,
    TextDelta,
)
from service.limits import StreamLimits
from service.metrics import StreamRecorder
from service.resume.hub import ResumableStreams
from service.shutdown import ShutdownCoordinator
from service.wire.sse import SSEEncoder
from testkit.redis_server import RedisServer
from testkit.services import make_settings

METRICS = StreamMetrics(None, None, None, 0, 0.0)


async def events(stream_id: str, tokens: int, pause: float) -> AsyncGenerator[ResponseBatch, None]:
    """A live stream (a token a read, `pause` apart), or a burst in one batch (no pause)."""
    if not pause:
        deltas: ResponseBatch = [TextDelta(f" w{index}") for index in range(tokens)]
        yield [StreamStarted(stream_id, "bench"), *deltas, StreamEnded("stop", None, METRICS)]
        return
    yield [StreamStarted(stream_id, "bench")]
    for index in range(tokens):
        await asyncio.sleep(pause)
        yield [TextDelta(f" w{index}")]
    yield [StreamEnded("stop", None, METRICS)]


def opened(number: int, tokens: int, pause: float) -> OpenedStream:
    stream_id = f"chat-bench-{number}-{time.monotonic_ns()}"
    recorder = StreamRecorder(stream_id=stream_id, model="bench", provider="bench", received_at=0)
    return OpenedStream(stream_id, events(stream_id, tokens, pause), recorder)


async def consume(source: ResponseBatches, stream_id: str) -> int:
    encoder = SSEEncoder(stream_id)
    written = 0
    async for batch in source:
        written += sum(len(encoder.encode(event)) for event in batch)
    return written + len(encoder.close())


async def direct(streams: int, tokens: int, pause: float) -> None:
    await asyncio.gather(
        *(
            consume(o.events, o.stream_id)
            for o in (opened(n, tokens, pause) for n in range(streams))
        )
    )


async def resumable(hub: ResumableStreams, streams: int, tokens: int, pause: float) -> None:
    limits = StreamLimits(per_process=streams, per_key=None)

    async def one(number: int) -> None:
        stream = opened(number, tokens, pause)
        followed = await hub.produce(stream, "sse", limits.acquire(None), None)
        assert followed is not None, "the store could not be reached"
        await consume(followed, stream.stream_id)

    await asyncio.gather(*(one(n) for n in range(streams)))


async def measure(redis: RedisServer, streams: int, tokens: int, pause: float) -> None:
    settings = make_settings(redis_url=redis.url, max_concurrent_streams=max(200, streams))
    hub = ResumableStreams(settings, ShutdownCoordinator(settings.shutdown_grace_seconds))
    await hub.start()
    try:
        await resumable(hub, 1, 10, 0)  # warm up: connections, the script
        figures: dict[str, list[tuple[float, float]]] = {}
        for name in ("direct", "resumable", "direct ", "resumable "):
            cpu, server_cpu = time.process_time(), process_cpu_seconds(redis.pid)
            if name.strip() == "direct":
                await direct(streams, tokens, pause)
            else:
                await resumable(hub, streams, tokens, pause)
                await asyncio.sleep(0.2)  # the writer's last flush
            used = (time.process_time() - cpu) / (streams * tokens) * 1e6
            server = (process_cpu_seconds(redis.pid) - server_cpu) / (streams * tokens) * 1e6
            figures.setdefault(name.strip(), []).append((used, server))
        label = f"{streams} stream(s) x {tokens} tokens" + (
            f", {pause * 1000:.0f} ms apart" if pause else ", at once"
        )
        print(label)
        for name, runs in figures.items():
            best = min(runs)
            print(f"  {name:9} {best[0]:6.1f} µs CPU per token here, {best[1]:5.1f} µs in redis")
    finally:
        await hub.aclose()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        redis = RedisServer.start(Path(directory))
        try:
            await measure(redis, 1, 20_000, 0)
            await measure(redis, 100, 100, 0.02)
        finally:
            redis.stop()


if __name__ == "__main__":
    uvloop.run(main())
