"""One upstream answer's streamed body as the service's batches: read, or pushed as it arrives.

`AnswerStream` is what `OpenAIChatUpstream.stream` and `.passthrough` return: an async generator
by protocol (the `ChatUpstream` contract: batches, at most one `Failed`, last; closing it
releases the connection), which opens the request through the SDK on its first `__anext__` and
then reads the body, one batch per network read that completed an event. It is a class rather
than an async generator function because it also pushes (`service.push.PushSource`): once told
to, the upstream connection hands it each read from its socket callback (`BodySource.deliver`),
and it decodes the read there and hands the batch on, waking no task.

What a body means is a `Decoder`'s: the chat completions chunks the native routes turn into text
(`ChatDecoder`), or the OpenAI events the `/v1` routes relay as they are (`RelayDecoder`). A
decoder is fed one read at a time and says when the answer is over (`[DONE]`, or a `Failed`);
`tail` is what the end of the body still means (the events held back, or `Failed` when the model
never finished).

After `[DONE]` the rest of the body (normally just the end of the chunked body) is waited for
when the stream is closed, within `DRAIN_SECONDS`, so that the HTTP/1.1 connection goes back to
the pool instead of being closed (a new TLS handshake would add to the next stream's time to
first token); on the service's own transport without holding up the close
(`release_when_complete`), which ends the client's response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
)
from functools import partial
from typing import Any, Protocol

import httpx2

from service.errors import ServiceError, UpstreamUnavailable
from service.events import Failed, Finished, TextDelta, UpstreamBatch, UpstreamEvent
from service.push import UpstreamSink
from service.upstream import openai_events
from service.upstream.sse_decoder import SSEDecoder
from service.upstream.transport import (
    BodySource,
    body_source,
    discard,
    release_when_complete,
)

DONE = b"[DONE]"
DRAIN_SECONDS = 0.1


class Decoder(Protocol):
    """Turns one answer's body, read by read, into batches."""

    # The answer is over: `[DONE]` came, or the last batch ended with a `Failed`.
    over: bool
    # The events of the read being decoded: said before a failure that interrupts it.
    batch: UpstreamBatch

    def feed(self, data: bytes) -> UpstreamBatch:
        """The events one read completed (possibly none)."""
        ...

    def tail(self) -> UpstreamBatch:
        """What the end of the body means, once, unless a `Failed` ended the answer."""
        ...


def unfinished() -> UpstreamUnavailable:
    return UpstreamUnavailable("the upstream ended the stream without finishing")


class ChatDecoder:
    """Chat completions chunks as `TextDelta`, `Finished`, `UsageReported` (and a provider's
    mid-stream error object as `Failed`). A body that ends without `[DONE]` and without a finish
    reason was cut short: `Failed`."""

    __slots__ = ("_done", "_finished", "_secrets", "_sse", "batch", "over")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = secrets
        self._sse = SSEDecoder()
        self._finished = False
        self._done = False
        self.over = False
        self.batch: UpstreamBatch = []

    def feed(self, data: bytes) -> UpstreamBatch:
        batch: UpstreamBatch = []
        self.batch = batch
        secrets = self._secrets
        for payload in self._sse.feed(data):
            if payload == DONE:
                self.over = self._done = True
                break
            events: list[UpstreamEvent] = openai_events.chunk_events(payload, secrets)
            batch += events
            if events and type(events[-1]) is not TextDelta:  # not just a token
                if isinstance(events[-1], Failed):
                    self.over = True
                    break
                self._finished = self._finished or any(isinstance(e, Finished) for e in events)
        return batch

    def tail(self) -> UpstreamBatch:
        return [] if self._done or self._finished else [Failed(unfinished())]


class RelayDecoder:
    """OpenAI's own events (chat completions chunks, Responses API events) as `Relayed`, each
    the upstream's bytes. Events before the first output (the role chunk, Azure's prompt filter
    results, `response.created`) are held back until the first output, so that a `Failed` first
    still means the upstream refused; a `Failed` later leaves what was held unsaid."""

    __slots__ = ("_decode", "_finished", "_held", "_sse", "batch", "over")

    def __init__(self, decode: Callable[[bytes | None, bytes], Any]) -> None:
        self._decode = decode
        self._sse = SSEDecoder()
        self._held: UpstreamBatch | None = []  # None once the first output went out
        self._finished = False
        self.over = False
        self.batch: UpstreamBatch = []

    def feed(self, data: bytes) -> UpstreamBatch:
        batch: UpstreamBatch = []
        self.batch = batch
        for name, payload in self._sse.feed_named(data):
            if payload == DONE:
                self.over = True
                break
            event = self._decode(name, payload)
            if isinstance(event, Failed):
                batch.append(event)
                self.over = True
                break
            self._finished = self._finished or event.finish_reason is not None
            held = self._held
            if held is not None:
                if not event.output and event.finish_reason is None:
                    held.append(event)
                    continue
                batch += held
                self._held = None
            batch.append(event)
        return batch

    def tail(self) -> UpstreamBatch:
        tail = self._held or []
        self._held = None
        return tail if self._finished else [*tail, Failed(unfinished())]


# The states of an answer stream.
_FRESH, _READING, _PUSHING, _OVER = range(4)


class AnswerStream(AsyncGenerator[UpstreamBatch, None]):
    """One upstream request and its streamed answer (the module docstring). `open` sends the
    request and returns the response, its body unread (raising what the SDK raises);
    `failure_of` translates any exception into the service's error."""

    __slots__ = (
        "_decoder",
        "_drain",
        "_failure_of",
        "_open",
        "_read",
        "_response",
        "_sink",
        "_source",
        "_state",
    )

    def __init__(
        self,
        open_response: Callable[[], Awaitable[httpx2.Response]],
        decoder: Decoder,
        failure_of: Callable[[Exception], ServiceError],
    ) -> None:
        self._open = open_response
        self._decoder = decoder
        self._failure_of = failure_of
        self._state = _FRESH
        self._response: httpx2.Response | None = None
        self._source: BodySource | None = None
        self._read: Callable[[], Awaitable[bytes]] | None = None
        self._sink: UpstreamSink | None = None
        # `[DONE]` came: what follows it is read when the stream is closed.
        self._drain = False

    # -- pulling -----------------------------------------------------------------------------

    async def __anext__(self) -> UpstreamBatch:
        if self._state == _OVER:
            raise StopAsyncIteration
        decoder = self._decoder
        try:
            read = self._read
            if read is None:
                read = await self._opened()
            while True:
                data = await read()
                if not data:
                    self._state = _OVER
                    tail = decoder.tail()
                    if tail:
                        return tail
                    raise StopAsyncIteration
                batch = decoder.feed(data)
                if decoder.over:
                    batch = self._over(batch)
                if batch:
                    return batch
                if self._state == _OVER:
                    raise StopAsyncIteration
        except (StopAsyncIteration, asyncio.CancelledError):
            raise
        except Exception as error:
            self._state = _OVER
            return [*decoder.batch, Failed(self._failure_of(error))]

    async def _opened(self) -> Callable[[], Awaitable[bytes]]:
        response = self._response = await self._open()
        self._state = _READING
        source = self._source = body_source(response)
        if source is not None:
            read = source.read
        else:  # through another transport (a proxy's): its raw reads
            chunks: AsyncIterator[bytes] = response.aiter_raw()
            read = partial(anext, chunks, b"")
        self._read = read
        return read

    def _over(self, batch: UpstreamBatch) -> UpstreamBatch:
        """The answer ended in `batch`: with `[DONE]` the tail follows it, and the rest of the
        body is drained on closing; after a `Failed`, nothing."""
        self._state = _OVER
        if batch and type(batch[-1]) is Failed:
            return batch
        self._drain = True
        return batch + self._decoder.tail()

    # -- pushing -----------------------------------------------------------------------------

    def push(self, sink: UpstreamSink) -> bool:
        source = self._source
        if source is None or self._state != _READING:
            return False
        self._state = _PUSHING
        self._sink = sink
        source.deliver(self)
        return True

    def body_received(self, data: bytes) -> None:
        """A read, from the connection's socket callback (`BodyReceiver`)."""
        sink = self._sink
        if sink is None:
            return
        decoder = self._decoder
        try:
            batch = decoder.feed(data)
            if not decoder.over:
                if batch:
                    sink.batch(batch)
                return
            batch = self._over(batch)
        except Exception as error:
            self._state = _OVER
            batch = [*decoder.batch, Failed(self._failure_of(error))]
        self._stop_pushing()
        if batch:
            sink.batch(batch)
        sink.end()

    def body_ended(self, error: Exception | None) -> None:
        """The body's end, from the connection (`BodyReceiver`)."""
        sink = self._sink
        if sink is None:
            return
        self._state = _OVER
        self._sink = None
        batch: UpstreamBatch = (
            self._decoder.tail() if error is None else [Failed(self._failure_of(error))]
        )
        if batch:
            sink.batch(batch)
        sink.end()

    def _stop_pushing(self) -> None:
        if self._sink is not None:
            self._sink = None
            if self._source is not None:
                self._source.deliver(None)

    def pause(self) -> None:
        if self._source is not None:
            self._source.pause_reading()

    def resume(self) -> None:
        if self._source is not None:
            self._source.resume_reading()

    # -- the async generator protocol --------------------------------------------------------

    def asend(self, value: None) -> Coroutine[Any, Any, UpstreamBatch]:
        return self.__anext__()

    async def athrow(self, *arguments: Any) -> UpstreamBatch:
        await self.aclose()
        raise arguments[1] if len(arguments) > 1 and arguments[1] is not None else arguments[0]

    async def aclose(self) -> None:
        self._state = _OVER
        self._stop_pushing()
        # Released from here on: the connection may soon serve another request.
        self._source = None
        response, self._response = self._response, None
        if response is None:
            return
        try:
            drain = self._drain and self._read is not None
            if drain and not release_when_complete(response, DRAIN_SECONDS):
                assert self._read is not None
                await _drain(self._read)  # another transport's body: read here
        finally:
            await response.aclose()

    def __del__(self) -> None:
        # Dropped unclosed: the connection must not stay taken.
        response = self._response
        if response is not None:
            discard(response)


async def _drain(read: Callable[[], Awaitable[bytes]]) -> None:
    """Read what follows `[DONE]` (module docstring). Bounded: a server that keeps the body open
    after `[DONE]` costs at most `DRAIN_SECONDS`, then the connection is dropped."""
    with contextlib.suppress(TimeoutError, httpx2.HTTPError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while await read():
                pass
