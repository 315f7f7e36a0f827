"""A fake upstream paced like a real model, lean enough to feed hundreds of streams at once.

    python -m bench.paced_upstream TOKENS PAUSE_SECONDS

Every POST is answered like OpenAI's streamed chat completions (`testkit.fake_upstream`'s
`answer_pieces`): the role chunk at once, then TOKENS one-token events PAUSE_SECONDS apart on a
fixed schedule (a late tick catches up rather than drifting), then finish, usage and
`[DONE]`. Tokens read ` Zq0`, ` Zq1`, ...: "Zq" appears nowhere else in any gateway's output,
so a client counts tokens by counting it, whatever the wire format.

Unlike the test fake (one `asyncio.wait` per piece, fine for tests), this is a bare
`asyncio.Protocol` with one timer per token and pre-framed chunks: at 250 streams it writes
25,000 events per second on the core it shares with the load client.

A request whose body contains `bench-<number>` is recorded under that number: tokens sent,
whether the answer completed, and when the client left mid-answer (`time.monotonic()`, the
system-wide CLOCK_MONOTONIC, so the load client's clock compares directly).
`GET /_bench/stats` returns `{"streams": {id: [tokens_sent, completed, left_at]}, "unlabelled":
n}`; `POST /_bench/reset` forgets them. Prints the port on the first line of stdout, then
serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import cast

import uvloop

from testkit.fake_upstream import answer_pieces

TOKEN_MARK = b"Zq"
_LABEL = re.compile(rb"bench-(\d+)")
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"x-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)


def framed(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece)


@dataclass
class StreamRecord:
    tokens_sent: int = 0
    completed: bool = False
    left_at: float | None = None


class Answer:
    """What every request gets: the same bytes, so nothing is encoded per stream."""

    def __init__(self, tokens: int, pause: float) -> None:
        pieces = answer_pieces([f" {TOKEN_MARK.decode()}{i}" for i in range(tokens)])
        # pieces: role chunk, TOKENS tokens, finish, usage, [DONE]
        self.opening = _HEAD + framed(pieces[0])
        self.tokens = [framed(piece) for piece in pieces[1 : 1 + tokens]]
        self.closing = b"".join(framed(piece) for piece in pieces[1 + tokens :]) + b"0\r\n\r\n"
        self.interval = pause


class Upstream:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.records: dict[int, StreamRecord] = {}
        self.unlabelled = 0

    def stats(self) -> bytes:
        streams = {
            label: [record.tokens_sent, record.completed, record.left_at]
            for label, record in self.records.items()
        }
        return json.dumps({"streams": streams, "unlabelled": self.unlabelled}).encode()

    def reset(self) -> bytes:
        self.records = {}
        self.unlabelled = 0
        return b"{}"


class Connection(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive), each answered paced."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.record: StreamRecord | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.next_token = 0
        self.started = 0.0
        self.close_after = False
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.streaming:
            return  # nothing is pipelined by the gateways; keep it for after the answer
        self._maybe_answer()

    def _maybe_answer(self) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").lower()
        length_match = re.search(r"content-length:\s*(\d+)", head)
        length = int(length_match.group(1)) if length_match else 0
        if len(self.buffer) < head_end + 4 + length:
            return
        body = self.buffer[head_end + 4 : head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length :]
        self.close_after = "connection: close" in head
        assert self.transport is not None
        if head.startswith(("get /_bench/stats", "post /_bench/reset")):
            reply = self.upstream.stats() if head.startswith("get") else self.upstream.reset()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(reply), reply)
            )
            self.transport.close()
            return
        label = _LABEL.search(body)
        self.record = StreamRecord()
        if label:
            self.upstream.records[int(label.group(1))] = self.record
        else:
            self.upstream.unlabelled += 1
        self.streaming = True
        self.transport.write(self.upstream.answer.opening)
        self.next_token = 0
        self.started = self.loop.time()
        self._schedule()

    def _schedule(self) -> None:
        due = self.started + (self.next_token + 1) * self.upstream.answer.interval
        self.timer = self.loop.call_at(due, self._send_token)

    def _send_token(self) -> None:
        assert self.transport is not None
        assert self.record is not None
        answer = self.upstream.answer
        self.transport.write(answer.tokens[self.next_token])
        self.next_token += 1
        self.record.tokens_sent = self.next_token
        if self.next_token < len(answer.tokens):
            self._schedule()
            return
        self.transport.write(answer.closing)
        self.record.completed = True
        self.streaming = False
        self.timer = None
        if self.close_after:
            self.transport.close()
        elif self.buffer:
            self._maybe_answer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.streaming and self.record is not None:
            self.record.left_at = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()


async def serve(tokens: int, pause: float) -> None:
    upstream = Upstream(Answer(tokens, pause))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1]), float(sys.argv[2])))


if __name__ == "__main__":
    main()
