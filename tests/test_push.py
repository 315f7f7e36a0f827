"""A stream pushed from the upstream's socket callbacks (`service.push`), in process: the real
pipeline (`ChatStream`) and response (`ChatStreamResponse`) between an upstream whose reads the
test makes (`testkit.pipelines.SocketUpstream`) and a client socket whose buffer the test fills
and drains (`Socket`, the server's `DirectBody`). What a real server and upstream do with it is
in every test that runs `python -m service`; these pin what is hard to time there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from service.chunking import WordRechunker
from service.errors import InternalError
from service.events import (
    Finished,
    ResponseEvent,
    TextDelta,
    UpstreamBatch,
)
from service.http.server_protocol import DIRECT_BODY
from service.http.stream_response import ChatStreamResponse, StreamTiming
from service.outcomes import Delivery
from service.wire.sse import SSEEncoder
from testkit.pipelines import Grace, SocketUpstream, bounded

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/chat/stream"}


class Socket:
    """The client's side: the server's `DirectBody` (synchronous writes, a buffer the test
    fills and drains) and the app's `send`, recording both in order; `leave` disconnects."""

    def __init__(self) -> None:
        self.written: list[tuple[str, bytes]] = []  # ("write" | "send", bytes)
        self.messages: list[dict[str, Any]] = []
        self.full = False
        self.gone = asyncio.Event()
        # The connection drops as the next write is made (the server sees it before the app).
        self.drops_at_next_write = False
        # The first body message waits this long to be accepted (a client slow at first).
        self.first_body_delay = 0.0
        self.writable: Callable[[], None] | None = None

    # The app's `send` (the start goes through it) and the server's own (the last write).
    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and self.first_body_delay:
            delay, self.first_body_delay = self.first_body_delay, 0.0
            await asyncio.sleep(delay)
        self.messages.append(message)
        if message["type"] == "http.response.body":
            self.written.append(("send", message.get("body", b"")))

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def can_write(self) -> bool:
        return True

    def write(self, body: bytes) -> bool:
        if self.drops_at_next_write:
            self.gone.set()
        if self.gone.is_set():
            raise ConnectionResetError("gone")
        self.written.append(("write", body))
        return not self.full

    def when_writable(self, callback: Callable[[], None] | None) -> None:
        self.writable = callback

    def drain(self) -> None:
        self.full = False
        if self.writable is not None:
            self.writable()

    @property
    def body(self) -> bytes:
        return b"".join(body for _, body in self.written)

    def ways(self) -> list[str]:
        return [way for way, _ in self.written]


class Encoder(SSEEncoder):
    """SSE, failing on the event `fail_on` says (a bug inside the pushed path)."""

    def __init__(self, fail_on: Callable[[ResponseEvent], bool] = lambda event: False) -> None:
        super().__init__("s")
        self._fail_on = fail_on

    def encode(self, event: ResponseEvent) -> bytes:
        if self._fail_on(event):
            raise ValueError("encoder bug")
        return super().encode(event)


def text(content: str) -> UpstreamBatch:
    return [TextDelta(content)]


FINISHED: UpstreamBatch = [Finished("stop")]


async def first_read(upstream: SocketUpstream) -> None:
    """The first read, which goes out as the response's start; then the rest is pushed."""
    upstream.arrive(text("a"))
    await upstream.pushed.wait()


def finish(upstream: SocketUpstream) -> None:
    """The model's finish, and the end of the body."""
    upstream.arrive(FINISHED)
    upstream.finish()


def run(
    upstream: SocketUpstream,
    socket: Socket,
    script: Callable[[], Coroutine[Any, Any, None]],
    *,
    idle_seconds: float = 30,
    max_seconds: float = 60,
    send_timeout_seconds: float = 5,
    heartbeat_seconds: float = 15,
    encoder: SSEEncoder | None = None,
    word_chunks: bool = False,
    direct: bool = True,
    cut_off: Grace | None = None,
) -> list[Delivery]:
    """Stream `upstream` to `socket` while `script` makes its reads; how it ended."""
    finished: list[Delivery] = []
    stream = bounded(
        upstream,
        max_seconds=max_seconds,
        idle_seconds=idle_seconds,
        rechunker=WordRechunker() if word_chunks else None,
    )
    response = ChatStreamResponse(
        stream,
        encoder or Encoder(),
        timing=StreamTiming(heartbeat_seconds, send_timeout_seconds),
        on_finish=finished.append,
        cut_off=cut_off,
    )
    scope = {**SCOPE, "extensions": {DIRECT_BODY: socket}} if direct else SCOPE

    async def main() -> None:
        await asyncio.wait_for(
            asyncio.gather(response(scope, socket.receive, socket.send), script()),  # type: ignore[arg-type]
            10,
        )

    asyncio.run(main())
    return finished


def test_after_the_first_batch_each_read_is_written_in_the_callback_that_brought_it() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        upstream.arrive(text("Hel"))
        await upstream.pushed.wait()  # the first batch is out: pushed
        upstream.arrive(text("lo"))
        # Written inside `arrive`, before this task gave the loop a chance to run anything.
        assert socket.ways() == ["send", "write"]
        assert b'"content":"lo"' in socket.written[-1][1]
        finish(upstream)

    assert run(upstream, socket, script) == ["delivered"]
    assert socket.ways() == ["send", "write", "send"]  # the last write completes the response
    assert socket.messages[-1]["more_body"] is False
    assert b"event: end\n" in socket.written[-1][1]
    assert socket.body.endswith(b"data: [DONE]\n\n")
    assert upstream.closed


def test_pushed_bytes_are_the_bytes_a_pulled_stream_sends() -> None:
    def stream(direct: bool) -> bytes:
        upstream, socket = SocketUpstream(), Socket()

        async def script() -> None:
            for piece in ("One", " two", " three"):
                upstream.arrive(text(piece))
                await asyncio.sleep(0.01)
            upstream.arrive(FINISHED)
            upstream.finish()

        assert run(upstream, socket, script, direct=direct) == ["delivered"]
        assert ("write" in socket.ways()) is direct
        # Metrics in the end event differ run to run: compare up to it.
        return socket.body.split(b"event: end")[0]

    assert stream(direct=True) == stream(direct=False)


def test_a_full_client_buffer_pauses_the_upstream_until_it_drains() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        socket.full = True
        upstream.arrive(text("b"))
        assert upstream.paused
        await asyncio.sleep(0.05)
        assert upstream.paused  # nothing but the drain resumes it
        socket.drain()
        assert not upstream.paused
        finish(upstream)

    assert run(upstream, socket, script) == ["delivered"]


def test_a_buffer_that_stays_full_is_the_send_timeout() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        socket.full = True
        upstream.arrive(text("b"))

    assert run(upstream, socket, script, send_timeout_seconds=0.2) == ["send_timeout"]
    assert upstream.closed
    assert socket.ways() == ["send", "write"]  # no end: the connection is dropped


def test_upstream_silence_while_pushed_ends_the_stream_in_band() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        upstream.arrive(text("a"))

    assert run(upstream, socket, script, idle_seconds=0.1) == ["delivered"]
    assert b'"type":"upstream_timeout"' in socket.body
    assert socket.body.endswith(b"data: [DONE]\n\n")
    assert upstream.closed
    assert upstream.paused


def test_each_pushed_read_restarts_the_idle_bound() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        for _ in range(8):  # 0.8 s of reads, each well inside the 0.4 s bound
            await asyncio.sleep(0.1)
            upstream.arrive(text("b"))
        finish(upstream)

    assert run(upstream, socket, script, idle_seconds=0.4) == ["delivered"]
    assert b"upstream_timeout" not in socket.body


def test_a_client_whose_buffer_is_full_is_not_upstream_silence() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        socket.full = True
        upstream.arrive(text("b"))
        await asyncio.sleep(0.4)  # four idle bounds, all of them the client's
        socket.drain()
        finish(upstream)

    assert run(upstream, socket, script, idle_seconds=0.1) == ["delivered"]
    assert b"upstream_timeout" not in socket.body


def test_reads_that_arrive_while_paused_are_not_the_end_of_the_silence() -> None:
    """One upstream read can hold several events, each a batch of its own: while the client's
    full buffer has the upstream paused, none of them restarts the idle bound's count."""
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        socket.full = True
        upstream.arrive(text("b"))  # fills the buffer: paused
        upstream.arrive(text("c"))  # the rest of the same read
        await asyncio.sleep(0.4)
        socket.drain()
        finish(upstream)

    assert run(upstream, socket, script, idle_seconds=0.1) == ["delivered"]
    assert b"upstream_timeout" not in socket.body
    assert b'"content":"c"' in socket.body


def test_a_bound_passed_while_the_first_batch_went_out_still_ends_the_stream() -> None:
    upstream, socket = SocketUpstream(), Socket()
    socket.first_body_delay = 0.3  # the stream's deadline (0.1 s) passes during this write

    async def script() -> None:
        upstream.arrive(text("a"))

    assert run(upstream, socket, script, max_seconds=0.1) == ["delivered"]
    assert b'"type":"stream_deadline"' in socket.body
    assert upstream.sink is None  # never pushed: the bound was already passed
    assert upstream.closed


def test_a_shutdown_as_the_end_comes_still_sends_the_end() -> None:
    """The grace running out in the same turn of the loop as the terminal batch arrives: the
    stream's own end goes out, not a shutdown error after a lost end."""
    upstream, socket, grace = SocketUpstream(), Socket(), Grace()

    async def script() -> None:
        await first_read(upstream)
        finish(upstream)  # the terminal batch resolves the response's last write...
        grace.expire()  # ...and the shutdown interrupts its task before it runs

    assert run(upstream, socket, script, cut_off=grace) == ["shutdown"]
    assert b"event: end\n" in socket.body
    assert b"server_shutting_down" not in socket.body
    assert socket.body.endswith(b"data: [DONE]\n\n")


def test_a_client_that_leaves_while_pushed_stops_it() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        socket.gone.set()
        await upstream.closing.wait()
        upstream.arrive(text("b"))  # a read after the close: nowhere to go

    assert run(upstream, socket, script) == ["client_left"]
    assert socket.ways() == ["send"]


def test_a_client_gone_at_a_write_is_the_client_leaving() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        socket.drops_at_next_write = True
        upstream.arrive(text("b"))

    assert run(upstream, socket, script) == ["client_left"]
    assert upstream.closed


def test_heartbeats_while_pushed_are_written_at_once() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        await first_read(upstream)
        await asyncio.sleep(0.35)
        finish(upstream)

    assert run(upstream, socket, script, heartbeat_seconds=0.1) == ["delivered"]
    beats = [way for way, body in socket.written if body == b": ping\n\n"]
    assert 2 <= len(beats) <= 4
    assert set(beats) == {"write"}


def test_word_chunking_while_pushed_keeps_the_text_and_cuts_on_words() -> None:
    upstream, socket = SocketUpstream(), Socket()
    pieces = ["Hel", "lo wo", "rld, ag", "ain"]

    async def script() -> None:
        upstream.arrive(text(pieces[0]))
        upstream.arrive(text(pieces[1]))  # the first word ends here: the first batch
        await upstream.pushed.wait()
        for piece in pieces[2:]:
            upstream.arrive(text(piece))
        finish(upstream)

    assert run(upstream, socket, script, word_chunks=True) == ["delivered"]
    body = socket.body.decode()
    contents = [part.split('"')[0] for part in body.split('"type":"delta","content":"')[1:]]
    assert "".join(contents) == "".join(pieces)
    assert contents == ["Hello ", "world, ", "again"]


def test_a_failure_inside_the_pushed_path_ends_in_band_as_an_internal_error() -> None:
    upstream, socket = SocketUpstream(), Socket()
    encoder = Encoder(fail_on=lambda event: isinstance(event, TextDelta) and event.text == "b")

    async def script() -> None:
        await first_read(upstream)
        upstream.arrive(text("b"))

    assert run(upstream, socket, script, encoder=encoder) == ["internal_error"]
    assert f'"type":"{InternalError.error_type}"'.encode() in socket.body
    assert socket.body.endswith(b"data: [DONE]\n\n")
    assert upstream.closed


def test_a_server_without_a_direct_body_reads_the_stream() -> None:
    upstream, socket = SocketUpstream(), Socket()

    async def script() -> None:
        for piece in ("a", "b"):
            upstream.arrive(text(piece))
            await asyncio.sleep(0.01)
        finish(upstream)

    assert run(upstream, socket, script, direct=False) == ["delivered"]
    assert upstream.sink is None
    assert set(socket.ways()) == {"send"}
