"""A fake OpenAI-compatible upstream on a loopback port, speaking HTTP/1.1 on a raw socket.

It is a transport-level fake: the service's real openai client talks real HTTP to it. Each request
is answered by the next queued `Reply` (or the default one): a status and headers, then a body
either whole or as chunked-encoding pieces sent one by one with pauses, so reads arrive split at
whatever offsets a test chooses. It records every request (`FakeUpstream.exchanges`), when the
client closed the connection before the reply was complete (`Exchange.disconnected_at`, on the
`time.monotonic` clock), and whether the client is holding the reply back by not reading it
(`Exchange.held_back_since`): the events tests synchronise on.

The bodies an OpenAI upstream sends are built by the functions at the end (`answer_pieces`,
`chunk_event`, `error_body`, ...); `RECORDINGS` holds streams recorded from real upstreams.
Misbehaving upstreams are built from the same parts: `compressed` bodies (and a `gzip_bomb`),
`redirect` replies, trickles (`pause` between pieces) and stalls (`hang`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.waiting import wait_until

RECORDINGS = Path(__file__).parent / "recordings"


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # Streamed as chunked transfer encoding, one piece per write, `pause` seconds apart; the body
    # ends right after the last piece, as a real upstream ends it right after `[DONE]`.
    pieces: Sequence[bytes] = ()
    # A whole body sent with Content-Length instead (error replies).
    body: bytes | None = None
    delay_before_headers: float = 0.0
    pause: float = 0.0
    # Keep the connection open after the last piece, never ending the body.
    hang: bool = False


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    completed: bool = False
    disconnected_at: float | None = None
    # Since when the reply's writes have been waiting for the client to read (TCP flow control
    # and the transport's buffer both full); None while they flow.
    held_back_since: float | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def held_back_seconds(self) -> float:
        """How long the client has been holding the reply back, without a break; 0 if not."""
        since = self.held_back_since
        return 0.0 if since is None else time.monotonic() - since


class FakeUpstream:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default_reply = Reply(status=500, body=b'{"error":{"message":"no reply queued"}}')
        self.exchanges: list[Exchange] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def wait_for(self, condition: Callable[[], object], timeout: float = 5.0) -> bool:
        """`testkit.waiting.wait_until`: for conditions on what this upstream recorded."""
        return wait_until(condition, timeout)

    def wait_for_exchanges(self, count: int, timeout: float = 5.0) -> bool:
        """Until exactly `count` requests have been recorded."""
        return self.wait_for(lambda: len(self.exchanges) == count, timeout)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self) -> None:
        if self._loop and self._server:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    # -- serving ---------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                exchange = await self._read_request(reader)
                if exchange is None:
                    return
                self.exchanges.append(exchange)
                reply = self.replies.popleft() if self.replies else self.default_reply
                if not await self._answer(reply, exchange, reader, writer):
                    return
                if exchange.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # the fake is stopping; a handler of asyncio.start_server must not re-raise
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Exchange | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Exchange(method, path, headers, body, received_at=time.monotonic())

    async def _answer(
        self,
        reply: Reply,
        exchange: Exchange,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Send `reply`; False when the client went away before it was complete."""
        closed = asyncio.ensure_future(reader.read(1))  # b"" when the client closes

        async def client_left_during(seconds: float) -> bool:
            if seconds > 0:
                await asyncio.wait((closed,), timeout=seconds)
            if closed.done():
                exchange.disconnected_at = time.monotonic()
                return True
            return False

        try:
            if await client_left_during(reply.delay_before_headers):
                return False
            head = [f"HTTP/1.1 {reply.status} Fake", "x-request-id: req_fake"]
            headers = {"content-type": "application/json", **reply.headers}
            if reply.body is not None:
                headers["content-length"] = str(len(reply.body))
            else:
                headers["content-type"] = "text/event-stream; charset=utf-8"
                headers["transfer-encoding"] = "chunked"
            head += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            if reply.body is not None:
                writer.write(reply.body)
                await writer.drain()
                exchange.completed = True
                return True
            for index, piece in enumerate(reply.pieces):
                if index and await client_left_during(reply.pause):
                    return False
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await _drain(writer, exchange)
            if reply.hang:
                await client_left_during(3600)
                return False
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            exchange.completed = True
            return True
        except ConnectionError:
            exchange.disconnected_at = time.monotonic()
            return False
        finally:
            if not closed.done():
                closed.cancel()
                await asyncio.wait((closed,))
            if not closed.cancelled():
                closed.exception()  # retrieved: a reset connection is one way a client leaves


async def _drain(writer: asyncio.StreamWriter, exchange: Exchange) -> None:
    """`writer.drain()`, recording in `exchange` while it waits for the client to read."""
    transport = writer.transport
    _, high_water = transport.get_write_buffer_limits()
    if transport.get_write_buffer_size() > high_water:  # drain() waits until the client reads
        exchange.held_back_since = time.monotonic()
    try:
        await writer.drain()
    finally:
        exchange.held_back_since = None


# -- building upstream bodies --------------------------------------------------------------


def chunk_event(
    *,
    content: str | None = None,
    finish_reason: str | None = None,
    role: str | None = None,
    model: str = "gpt-4o-mini-2024-07-18",
) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1763700000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def usage_event(prompt_tokens: int, completion_tokens: int) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1763700000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def answer_pieces(tokens: Sequence[str], *, usage: bool = True) -> list[bytes]:
    """One event per token, as OpenAI sends them."""
    pieces = [chunk_event(role="assistant", content="")]
    pieces += [chunk_event(content=token) for token in tokens]
    pieces.append(chunk_event(finish_reason="stop"))
    if usage:
        pieces.append(usage_event(7, len(tokens)))
    pieces.append(DONE)
    return pieces


def first_token_then_silence(tokens: Sequence[str], silence: float) -> Reply:
    """The role chunk and the first token at once (the service's response head goes out with
    the first token), then `silence` seconds before each further piece: a stream held open and
    idle."""
    pieces = answer_pieces(tokens)
    return Reply(pieces=[pieces[0] + pieces[1], *pieces[2:]], pause=silence)


def split_awkwardly(data: bytes, sizes: Sequence[int] = (1, 7, 3, 13, 2, 29, 5)) -> Iterator[bytes]:
    """`data` cut into pieces of cycling sizes: through CRLFs, JSON and multi-byte characters."""
    offset, index = 0, 0
    while offset < len(data):
        size = sizes[index % len(sizes)]
        yield data[offset : offset + size]
        offset += size
        index += 1


def error_body(message: str, error_type: str, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()


def compressed(pieces: Sequence[bytes]) -> list[bytes]:
    """`pieces` as one gzip stream (send with `Content-Encoding: gzip`), each piece flushed so
    that it can be inflated as soon as it arrives."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    out = [compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH) for piece in pieces]
    out.append(compressor.flush())
    return [piece for piece in out if piece]


def gzip_bomb(inflated_megabytes: int, *, piece_bytes: int = 16 * 1024) -> list[bytes]:
    """Newlines that inflate to `inflated_megabytes` MB from ~1 KB per MB on the wire, cut into
    pieces of `piece_bytes`."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    wire = b"".join(compressor.compress(block) for _ in range(inflated_megabytes))
    wire += compressor.flush()
    return [wire[i : i + piece_bytes] for i in range(0, len(wire), piece_bytes)]


def redirect(location: str, status: int = 307) -> Reply:
    """A redirect, as a misconfigured base URL or a hostile upstream answers."""
    return Reply(status=status, headers={"location": location}, body=b"")
