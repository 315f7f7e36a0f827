"""The streaming response driven by hand-written ASGI `receive` and `send`, for the cases a
real client cannot time reliably: a send that never completes, a failure inside the event
chain, a format without a heartbeat waiting for its first event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest

from service.errors import UpstreamUnavailable
from service.events import (
    ResponseBatch,
    StreamEnded,
    StreamFailed,
    StreamMetrics,
    StreamStarted,
    TextDelta,
)
from service.http.server_protocol import DIRECT_BODY
from service.http.stream_response import ChatStreamResponse, StreamTiming
from service.outcomes import Delivery
from service.wire.sse import SSEEncoder
from service.wire.text import TextEncoder
from testkit.pipelines import Grace

METRICS = StreamMetrics(
    ttft_ms=1.0, upstream_ttft_ms=1.0, tokens_per_second=None, output_tokens=1, duration_ms=2.0
)
SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/chat/stream"}


async def answer(
    *, fail_with: BaseException | None = None, delay: float = 0.0
) -> AsyncGenerator[ResponseBatch, None]:
    await asyncio.sleep(delay)
    if fail_with is not None and delay:
        raise fail_with
    yield [StreamStarted("s", "m"), TextDelta("Hello")]
    if fail_with is not None:
        raise fail_with
    yield [StreamEnded("stop", None, METRICS)]


class Client:
    """Records what the response sends; never disconnects unless told to."""

    def __init__(self, block_on_last: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.block_on_last = block_on_last
        self.gone = asyncio.Event()
        self._sent = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.block_on_last and message.get("more_body") is False:
            await asyncio.Event().wait()  # the client's window stays closed
        self.messages.append(message)
        self._sent.set()

    async def wait_for(self, marker: bytes) -> None:
        """Until the body received so far contains `marker`."""
        while marker not in self.body:
            self._sent.clear()
            await self._sent.wait()

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


Make = Callable[[Callable[[Delivery], None]], ChatStreamResponse]


def run(make: Make, client: Client, timeout: float = 5) -> tuple[list[Delivery], float]:
    """Builds the response with an `on_finish` that records, and runs it against `client`."""
    finished: list[Delivery] = []
    response = make(finished.append)

    async def main() -> float:
        started = time.monotonic()
        await asyncio.wait_for(response(SCOPE, client.receive, client.send), timeout)  # type: ignore[arg-type]
        return time.monotonic() - started

    return finished, asyncio.run(main())


def sse(events: AsyncGenerator[ResponseBatch, None], heartbeat_seconds: float = 15.0) -> Make:
    timing = StreamTiming(heartbeat_seconds=heartbeat_seconds, send_timeout_seconds=0.3)
    return lambda on_finish: ChatStreamResponse(
        events, SSEEncoder("s"), timing=timing, on_finish=on_finish
    )


def test_a_stuck_last_write_is_timed_out_and_reported() -> None:
    client = Client(block_on_last=True)
    finished, took = run(sse(answer()), client)
    assert finished == ["send_timeout"]
    assert took < 2  # 1 to 2 send timeouts, not forever
    assert b'"content":"Hello"' in client.body
    # The end event and [DONE] go in one last write: it never got through, nothing followed it.
    assert b"event: end" not in client.body
    assert b"[DONE]" not in client.body


def test_one_write_per_batch_and_the_end_marker_with_the_terminal_event() -> None:
    async def batches() -> AsyncGenerator[ResponseBatch, None]:
        yield [StreamStarted("s", "m"), TextDelta("a"), TextDelta("b")]
        yield [TextDelta("c")]
        yield [StreamEnded("stop", None, METRICS)]

    client = Client()
    finished, _ = run(sse(batches()), client)
    assert finished == ["delivered"]
    bodies = [message["body"] for message in client.messages[1:]]
    assert len(bodies) == 3
    assert [body.count(b"\n\n") for body in bodies] == [3, 1, 2]  # events, then end + [DONE]
    assert bodies[2].endswith(b"id: s:done\ndata: [DONE]\n\n")
    assert client.messages[-1]["more_body"] is False


def test_failure_before_the_first_event_is_a_500_json() -> None:
    client = Client()
    finished, _ = run(sse(answer(fail_with=KeyError("bug"), delay=0.01)), client)
    assert finished == ["internal_error"]
    assert client.status == 500
    assert client.body == (
        b'{"error":{"type":"internal_error","message":"internal server error","retryable":false}}'
    )


def test_failure_mid_stream_ends_in_band_with_done() -> None:
    client = Client()
    finished, _ = run(sse(answer(fail_with=RuntimeError("bug"))), client)
    assert finished == ["internal_error"]
    assert client.status == 200
    body = client.body.decode()
    assert '"content":"Hello"' in body
    assert "event: error" in body
    assert '"type":"internal_error"' in body
    assert body.endswith("data: [DONE]\n\n")
    assert "bug" not in body  # the details go to the log only
    assert client.messages[-1]["more_body"] is False


def test_a_format_without_heartbeat_keeps_its_real_status() -> None:
    async def late_failure() -> AsyncGenerator[ResponseBatch, None]:
        await asyncio.sleep(0.5)
        yield [StreamFailed(UpstreamUnavailable("gone"))]

    client = Client()
    timing = StreamTiming(heartbeat_seconds=0.05, send_timeout_seconds=1)
    finished, _ = run(
        lambda on_finish: ChatStreamResponse(
            late_failure(), TextEncoder(), timing=timing, on_finish=on_finish
        ),
        client,
    )
    assert finished == ["refused"]
    assert client.status == 502


def test_sse_commits_headers_with_a_first_heartbeat() -> None:
    async def slow() -> AsyncGenerator[ResponseBatch, None]:
        await asyncio.sleep(0.3)
        yield [StreamFailed(UpstreamUnavailable("gone"))]

    client = Client()
    finished, _ = run(sse(slow(), heartbeat_seconds=0.1), client)
    assert client.status == 200
    assert client.messages[1]["body"] == b": ping\n\n"
    assert b"event: error" in client.body
    assert finished == ["delivered"]


def test_client_leaving_is_reported_once() -> None:
    async def endless() -> AsyncGenerator[ResponseBatch, None]:
        yield [StreamStarted("s", "m")]
        while True:
            await asyncio.sleep(0.01)
            yield [TextDelta("x")]

    client = Client()

    async def leave_mid_stream() -> None:
        await client.wait_for(b'"content":"x"')
        client.gone.set()

    finished: list[Delivery] = []
    response = sse(endless())(finished.append)

    async def main() -> None:
        await asyncio.gather(response(SCOPE, client.receive, client.send), leave_mid_stream())  # type: ignore[arg-type]

    asyncio.run(main())
    assert finished == ["client_left"]


class SendOnlyBody:
    """The server's `DirectBody` with its `send` only (no synchronous writes: `can_write`
    says no), recording what went through it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def can_write(self) -> bool:
        return False

    def write(self, body: bytes) -> bool:
        raise AssertionError("not offered")

    def when_writable(self, callback: Callable[[], None] | None) -> None:
        raise AssertionError("not offered")


def test_the_body_goes_to_the_servers_direct_send_once_the_start_went_through_the_app() -> None:
    """With the server's `service.direct_body` extension, only the start passes the middleware
    (`send`); every body write goes to the server's own send (issue #16)."""
    through_app = Client()
    direct_body = SendOnlyBody()
    direct = direct_body.messages

    finished: list[Delivery] = []
    response = sse(answer())(finished.append)
    scope = {**SCOPE, "extensions": {DIRECT_BODY: direct_body}}
    asyncio.run(response(scope, through_app.receive, through_app.send))  # type: ignore[arg-type]
    assert finished == ["delivered"]
    assert [message["type"] for message in through_app.messages] == ["http.response.start"]
    assert [message["type"] for message in direct] == ["http.response.body"] * 2
    assert b'"content":"Hello"' in direct[0]["body"]
    assert direct[-1]["more_body"] is False


def test_heartbeats_while_the_upstream_is_silent_mid_stream() -> None:
    async def pausing() -> AsyncGenerator[ResponseBatch, None]:
        yield [StreamStarted("s", "m"), TextDelta("a")]
        await asyncio.sleep(0.45)  # three heartbeat periods without anything to say
        yield [TextDelta("b")]
        yield [StreamEnded("stop", None, METRICS)]

    client = Client()
    beats: list[None] = []
    timing = StreamTiming(heartbeat_seconds=0.1, send_timeout_seconds=1)
    finished, _ = run(
        lambda on_finish: ChatStreamResponse(
            pausing(),
            SSEEncoder("s"),
            timing=timing,
            on_finish=on_finish,
            on_heartbeat=lambda: beats.append(None),
        ),
        client,
    )
    assert finished == ["delivered"]
    bodies = [message["body"] for message in client.messages[1:]]
    pings = [body for body in bodies if body == b": ping\n\n"]
    assert 2 <= len(pings) <= 5
    assert len(beats) == len(pings)
    assert bodies[0].startswith(b"id: s:0\nevent: start")  # the first batch, heartbeats, the rest
    assert b'"content":"b"' in bodies[len(pings) + 1]


def cut_stream(grace: Grace, events: AsyncGenerator[ResponseBatch, None]) -> Make:
    timing = StreamTiming(heartbeat_seconds=15, send_timeout_seconds=1)
    return lambda on_finish: ChatStreamResponse(
        events, SSEEncoder("s"), timing=timing, on_finish=on_finish, cut_off=grace
    )


async def silent_then(batches: list[ResponseBatch]) -> AsyncGenerator[ResponseBatch, None]:
    for batch in batches:
        yield batch
    await asyncio.sleep(3600)
    yield [TextDelta("never")]


def test_the_end_of_the_grace_before_the_first_event_is_a_503() -> None:
    grace, client = Grace(), Client()
    finished: list[Delivery] = []
    response = cut_stream(grace, silent_then([]))(finished.append)

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.1, grace.expire)
        await response(SCOPE, client.receive, client.send)  # type: ignore[arg-type]

    asyncio.run(main())
    assert finished == ["shutdown"]
    assert client.status == 503
    assert b"server_shutting_down" in client.body
    assert grace.callbacks == []  # called off once the response ended


def test_the_end_of_the_grace_mid_stream_ends_it_in_band() -> None:
    grace, client = Grace(), Client()
    finished: list[Delivery] = []
    response = cut_stream(grace, silent_then([[StreamStarted("s", "m"), TextDelta("a")]]))(
        finished.append
    )

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.1, grace.expire)
        await response(SCOPE, client.receive, client.send)  # type: ignore[arg-type]

    asyncio.run(main())
    assert finished == ["shutdown"]
    assert client.status == 200
    body = client.body.decode()
    assert '"content":"a"' in body
    assert '"type":"server_shutting_down"' in body
    assert body.endswith("data: [DONE]\n\n")


def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    client = Client()
    finished: list[Delivery] = []
    response = sse(silent_then([[StreamStarted("s", "m"), TextDelta("a")]]))(finished.append)

    async def main() -> None:
        task = asyncio.ensure_future(response(SCOPE, client.receive, client.send))  # type: ignore[arg-type]
        await client.wait_for(b'"content":"a"')
        task.cancel()  # the server cancelling the request
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert finished == ["internal_error"]  # reported once, as the response did not end itself


def test_a_stream_opened_after_the_grace_ran_out_is_a_503() -> None:
    class Expired:
        def on_grace_expired(self, callback: Callable[[], None]) -> Callable[[], None]:
            callback()  # as ShutdownCoordinator does once the grace has run out
            return lambda: None

    client = Client()
    timing = StreamTiming(heartbeat_seconds=15, send_timeout_seconds=1)
    finished, _ = run(
        lambda on_finish: ChatStreamResponse(
            answer(delay=1), SSEEncoder("s"), timing=timing, on_finish=on_finish, cut_off=Expired()
        ),
        client,
    )
    assert finished == ["shutdown"]
    assert client.status == 503
