"""The load client: many streamed requests at once, each timed token by token.

One `asyncio.Protocol` per stream on a fresh connection (`Connection: close`), so the client
costs little on the core it shares with the fake upstream. It never parses the wire format:
every token the paced upstream sends contains `TOKEN_MARK`, which appears nowhere else in any
gateway's output (SSE, the service's events, chunked framing), so counting it counts tokens.

A level keeps `concurrency` streams open: that many workers, started evenly over one answer's
duration (so arrivals are spread, as real traffic is), each running its streams back to back.
A share of the streams leave after a few tokens, to time how fast the upstream is let go.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import cast

from bench.compare.targets import Target
from bench.paced_upstream import TOKEN_MARK


@dataclass(frozen=True)
class Level:
    concurrency: int
    streams_per_worker: int
    # Share of the streams (spread evenly) that close the connection after `leave_after` tokens.
    leave_share: float = 0.0
    leave_after: int = 20


@dataclass
class StreamResult:
    label: int
    leaves: bool
    started: float
    status: int | None = None
    error: str | None = None
    first_token_at: float | None = None
    tokens: int = 0
    left_at: float | None = None
    ended_at: float | None = None

    @property
    def ttft(self) -> float | None:
        """Seconds to the first token; a stream cut by its deadline counts the time it waited."""
        if self.first_token_at is not None:
            return self.first_token_at - self.started
        if self.error == "timeout" and self.ended_at is not None:
            return self.ended_at - self.started
        return None


@dataclass
class LevelRun:
    """Everything the client saw during one level."""

    results: list[StreamResult] = field(default_factory=list)
    # Seconds between consecutive tokens of a stream (0 for tokens that came in the same read).
    gaps: list[float] = field(default_factory=list)
    # Tokens received per 100 ms since the level started.
    buckets: list[int] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0

    def count(self, now: float, tokens: int) -> None:
        slot = int((now - self.started) * 10)
        if slot >= len(self.buckets):
            self.buckets.extend([0] * (slot + 1 - len(self.buckets)))
        self.buckets[slot] += tokens

    def tokens_per_second(self, start: float, end: float) -> float:
        """Tokens received per second between `start` and `end` seconds into the level."""
        first, last = int(start * 10), max(int(start * 10) + 1, int(end * 10))
        return sum(self.buckets[first:last]) / ((last - first) / 10)


class StreamClient(asyncio.Protocol):
    def __init__(
        self, request: bytes, result: StreamResult, leave_after: int, run: LevelRun
    ) -> None:
        self.request = request
        self.result = result
        self.leave_after = leave_after
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.tail = b""
        self.last_token_at = 0.0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        result = self.result
        if result.status is None:
            self.head += data
            if b"\r\n" not in self.head:
                return
            data, self.head = self.head, b""
            result.status = int(data[9:12])
            if result.status != 200:
                result.error = f"HTTP {result.status}"
                self._close()
                return
        window = self.tail + data
        tokens = window.count(TOKEN_MARK)
        self.tail = window[-(len(TOKEN_MARK) - 1) :]
        if not tokens:
            return
        if result.first_token_at is None:
            result.first_token_at = now
            self.run.gaps.extend([0.0] * (tokens - 1))
        else:
            self.run.gaps.append(now - self.last_token_at)
            self.run.gaps.extend([0.0] * (tokens - 1))
        self.last_token_at = now
        result.tokens += tokens
        self.run.count(now, tokens)
        if self.leave_after and result.tokens >= self.leave_after:
            result.left_at = time.monotonic()
            self._close()

    def _close(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.result.ended_at = time.monotonic()
        if not self.closed.done():
            self.closed.set_result(None)


def request_bytes(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        b"%sContent-Length: %d\r\n\r\n%s" % (path.encode(), extra, len(body), body)
    )


async def stream_once(
    port: int, request: bytes, result: StreamResult, leave_after: int, run: LevelRun
) -> None:
    """One stream, from connecting to the server closing it (or us leaving)."""
    loop = asyncio.get_running_loop()
    client: StreamClient | None = None
    try:
        _, client = await loop.create_connection(
            lambda: StreamClient(request, result, leave_after, run), "127.0.0.1", port
        )
        await client.closed
        if result.status is None:
            result.error = "closed before a response"
    except OSError as error:
        result.error = f"connect: {error.strerror or error}"
        result.ended_at = time.monotonic()
    except asyncio.CancelledError:
        result.error = result.error or "timeout"
        result.ended_at = time.monotonic()
        if client is not None and client.transport is not None:
            client.transport.abort()
        raise


def is_leaver(index: int, share: float) -> bool:
    """Spread `share` of the indices evenly: 0.1 marks one stream in ten."""
    return int((index + 1) * share) > int(index * share)


async def run_level(
    port: int,
    target: Target,
    level: Level,
    labels: itertools.count[int],
    *,
    answer_seconds: float,
    timeout_seconds: float,
) -> LevelRun:
    """Run one level of `target` on `port`; streams still open after `timeout_seconds` are cut."""
    run = LevelRun(started=time.monotonic())
    stagger = answer_seconds / level.concurrency

    async def worker(number: int) -> None:
        await asyncio.sleep(number * stagger)
        for round_number in range(level.streams_per_worker):
            index = round_number * level.concurrency + number
            leaves = is_leaver(index, level.leave_share)
            label = next(labels)
            result = StreamResult(label=label, leaves=leaves, started=time.monotonic())
            run.results.append(result)
            body = target.body(f"bench-{label}")
            request = request_bytes(target.path, body, target.headers)
            await stream_once(port, request, result, level.leave_after if leaves else 0, run)

    tasks = [asyncio.ensure_future(worker(number)) for number in range(level.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    run.seconds = time.monotonic() - run.started
    return run
