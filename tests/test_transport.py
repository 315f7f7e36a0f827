"""The service's own HTTP/1.1 transport (`service.upstream.transport`), through httpx2's client
as the SDK uses it, against a raw server on a loopback port that writes exactly the bytes each
test gives it: keep-alive and its limits, every way a body ends, stale connections, bounds,
timeouts, back-pressure and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx2
import pytest

from service.upstream.transport import (
    BodySource,
    HTTP1Transport,
    body_reader,
    body_source,
    release_when_complete,
)

Answer = Callable[[bytes], bytes | None]  # the request's bytes -> the reply's (None: hang up)


class RawServer:
    """Answers each request on a connection with `answer(request)`, keeping the connection
    unless told to close; counts connections and requests."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    writer.close()
                    return
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower():
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return


def reply(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def chunked(*pieces: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@contextlib.asynccontextmanager
async def client(**limits: float) -> AsyncIterator[httpx2.AsyncClient]:
    transport = HTTP1Transport(
        max_connections=int(limits.get("max_connections", 10)),
        keepalive_seconds=limits.get("keepalive_seconds", 5.0),
    )
    timeout = httpx2.Timeout(limits.get("read", 5.0), connect=limits.get("connect", 5.0))
    async with httpx2.AsyncClient(transport=transport, timeout=timeout) as http:
        yield http


async def test_bodies_of_every_kind_and_keep_alive() -> None:
    answers = iter(
        [
            reply(b'{"a": 1}', b"content-type: application/json"),
            chunked(b"data: one\n\n", b"data: two\n\n"),
            reply(b"", status=b"204 No Content"),
        ]
    )
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        first = await http.post(server.url + "/v1/x", json={"q": 1})
        second = await http.post(server.url + "/v1/y", content=b"{}")
        third = await http.get(server.url + "/v1/z")
    assert (first.status_code, first.json()) == (200, {"a": 1})
    assert first.headers["content-type"] == "application/json"
    assert second.content == b"data: one\n\ndata: two\n\n"
    assert third.status_code == 204
    assert server.connections == 1  # kept alive across the three
    assert server.requests[0].startswith(b"POST /v1/x HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in server.requests[0]
    assert server.requests[0].endswith(b'{"q":1}')


async def test_a_stream_is_read_as_it_arrives_from_the_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = iter([head + b"4\r\nfirs\r\n", reply(b"")])
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        request = http.build_request("POST", server.url + "/s", content=b"{}")
        response = await http.send(request, stream=True)
        read = body_reader(response)
        assert read is not None
        assert await read() == b"firs"
        server.writers[0].write(b"3\r\nt!!\r\n0\r\n\r\n")
        assert await read() == b"t!!"
        assert await read() == b""
        await response.aclose()
        await http.post(server.url + "/again", content=b"{}")  # after the whole body: reused
    assert server.connections == 1


async def streamed(http: httpx2.AsyncClient, url: str) -> tuple[httpx2.Response, BodySource]:
    """A POST's response, its body unread, and its source."""
    response = await http.send(http.build_request("POST", url, content=b"x"), stream=True)
    source = body_source(response)
    assert source is not None
    return response, source


class Received:
    """A `BodyReceiver` that records what the connection hands it, and when it is over."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended: list[Exception | None] = []
        self.got = asyncio.Event()

    def body_received(self, data: bytes) -> None:
        self.data.append(data)
        self.got.set()

    def body_ended(self, error: Exception | None) -> None:
        self.ended.append(error)
        self.got.set()

    async def next(self) -> None:
        await asyncio.wait_for(self.got.wait(), 5)
        self.got.clear()


async def test_a_delivered_body_arrives_in_the_socket_callbacks_unread_part_first() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = iter([head + b"4\r\nfirs\r\n", reply(b"")])
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        response, source = await streamed(http, server.url)
        await asyncio.sleep(0.05)  # the first chunk arrived, unread
        received = Received()
        source.deliver(received)
        assert received.data == [b"firs"]  # at once, inside `deliver`
        server.writers[0].write(b"3\r\nt!!\r\n")
        await received.next()
        assert received.data == [b"firs", b"t!!"]
        server.writers[0].write(b"0\r\n\r\n")
        await received.next()
        assert received.ended == [None]
        await response.aclose()
        await http.post(server.url + "/again", content=b"{}")  # whole: the connection is reused
    assert server.connections == 1


async def test_a_delivered_body_broken_off_ends_with_the_read_error() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
    async with RawServer(lambda request: head + b"part") as server, client() as http:
        response, source = await streamed(http, server.url)
        received = Received()
        source.deliver(received)
        while not received.data:
            await received.next()
        server.writers[0].close()
        while not received.ended:
            await received.next()
        assert b"".join(received.data) == b"part"
        assert len(received.ended) == 1
        assert isinstance(received.ended[0], httpx2.ReadError)
        await response.aclose()


async def test_a_paused_delivery_reads_nothing_until_resumed() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    async with RawServer(lambda request: head) as server, client() as http:
        response, source = await streamed(http, server.url)
        received = Received()
        source.deliver(received)
        source.pause_reading()
        server.writers[0].write(b"1\r\na\r\n")
        await asyncio.sleep(0.2)
        assert received.data == []
        source.resume_reading()
        await received.next()
        assert received.data == [b"a"]
        await response.aclose()


async def test_a_connection_goes_back_to_the_pool_when_the_rest_of_its_body_arrives() -> None:
    """`release_when_complete`: the exchange ends without waiting, the connection is kept once
    the body's end arrives, and closed if it does not within the time given."""
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = iter([head + b"5\r\n[DONE\r\n", reply(b"reused"), head, reply(b"fresh")])
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        response = await http.send(
            http.build_request("POST", server.url, content=b"x"), stream=True
        )
        assert release_when_complete(response, 1.0)
        await response.aclose()  # returns at once: the drainer has the connection
        server.writers[0].write(b"0\r\n\r\n")
        await asyncio.sleep(0.1)
        assert (await http.post(server.url, content=b"x")).content == b"reused"
        assert server.connections == 1
        # The body never ends: the connection is closed after the time given, never reused.
        response = await http.send(
            http.build_request("POST", server.url, content=b"x"), stream=True
        )
        assert release_when_complete(response, 0.1)
        await response.aclose()
        await asyncio.sleep(0.3)
        assert (await http.post(server.url, content=b"x")).content == b"fresh"
    assert server.connections == 2


async def test_a_body_up_to_the_end_of_the_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end"
    async with RawServer(lambda request: answer) as server, client() as http:
        first = await http.post(server.url, content=b"x")
        second = await http.post(server.url, content=b"x")
    assert first.content == second.content == b"until the end"
    assert server.connections == 2  # never reused


async def test_an_unfinished_body_closes_its_connection_a_finished_one_is_reused() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = iter([head + b"2\r\nab\r\n", chunked(b"a" * 10), reply(b"next"), reply(b"last")])
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        for _ in range(2):  # unfinished, then finished: neither read by its client
            request = http.build_request("POST", server.url, content=b"x")
            response = await http.send(request, stream=True)
            await asyncio.sleep(0.1)  # all of it arrived
            await response.aclose()
        assert server.connections == 2  # the unfinished one was closed
        # The finished one was kept, and what its client left unread is not the next answer.
        assert (await http.post(server.url, content=b"x")).content == b"next"
        assert (await http.post(server.url, content=b"x")).content == b"last"
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_no_failure() -> None:
    answers = iter([reply(b"one"), None, reply(b"two")])
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        assert (await http.post(server.url, content=b"x")).content == b"one"
        # The second request finds the connection kept alive, which the server drops on it.
        assert (await http.post(server.url, content=b"x")).content == b"two"
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_a_connection_broken_mid_body_is_a_read_error() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"

    def cut(request: bytes) -> bytes | None:
        return None if server.requests[1:] else answer

    async with RawServer(lambda request: cut(request)) as server, client() as http:
        response = await http.send(
            http.build_request("POST", server.url, content=b"x"), stream=True
        )
        read = body_reader(response)
        assert read is not None
        assert await read() == b"only this"
        server.writers[0].close()
        with pytest.raises(httpx2.ReadError):
            await read()
        await response.aclose()


async def test_informational_heads_are_skipped_and_huge_heads_refused() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"
    huge = b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"y" * 70_000 + b"\r\ncontent-length: 0\r\n\r\n"
    answers = iter([early + reply(b"real"), huge])
    async with RawServer(lambda request: next(answers)) as server, client() as http:
        assert (await http.post(server.url, content=b"x")).content == b"real"
        with pytest.raises(httpx2.RemoteProtocolError, match="head exceeds"):
            await http.post(server.url, content=b"x")


async def test_a_silent_head_times_out_and_a_refused_connection_is_a_connect_error() -> None:
    async with RawServer(lambda request: b"") as server, client(read=0.2) as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.post(server.url, content=b"x")
        port = server.port
    async with client() as http:
        with pytest.raises(httpx2.ConnectError) as refused:
            await http.post(f"http://127.0.0.1:{port}", content=b"x")
    assert isinstance(refused.value.__cause__, OSError)


async def test_connections_are_bounded() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    answers = iter([head + b"1\r\nx\r\n"] * 2 + [head + b"1\r\nx\r\n0\r\n\r\n"])
    async with (
        RawServer(lambda request: next(answers)) as server,
        client(max_connections=2) as http,
    ):
        opened = [
            await http.send(http.build_request("POST", server.url, content=b"x"), stream=True)
            for _ in range(2)
        ]
        third = asyncio.ensure_future(http.post(server.url, content=b"x"))
        await asyncio.sleep(0.2)
        assert not third.done()  # waits for a connection
        assert server.connections == 2
        await opened[0].aclose()  # unfinished: closed, its room freed
        assert (await asyncio.wait_for(third, 5)).content == b"x"
        await opened[1].aclose()
    assert server.connections == 3


async def test_an_unread_stream_stops_the_socket_being_read() -> None:
    """A client that reads nothing cannot make the transport hold the upstream's answer."""
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    piece = b"%x\r\n%s\r\n" % (16 * 1024, b"z" * 16 * 1024)
    async with RawServer(lambda request: head) as server, client() as http:
        response = await http.send(
            http.build_request("POST", server.url, content=b"x"), stream=True
        )
        writer = server.writers[0]
        for _ in range(2000):  # 32 MB offered
            writer.write(piece)
        await asyncio.sleep(0.5)
        # The kernel buffers take a few MB; the rest waits in the server, not in the service.
        assert writer.transport.get_write_buffer_size() > 16 * 1024 * 1024
        read = body_reader(response)
        assert read is not None
        assert len(await read()) <= 128 * 1024
        await response.aclose()


async def test_https_with_the_host_name_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # noqa: ASYNC221  # before any connection: nothing waits on the loop
        ["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(1)
        writer.write(reply(b"secure"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client() as http:
            response = await http.post(f"https://localhost:{port}", content=b"x")
            assert response.content == b"secure"
            with pytest.raises(httpx2.ConnectError):  # the certificate names localhost only
                await http.post(f"https://127.0.0.1:{port}", content=b"x")
    finally:
        server.close()
