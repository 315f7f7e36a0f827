"""A stream relayed from the upstream's socket to the client's in the callbacks that read it.

Once a stream's first batch has gone out (its status decided), the rest need not wake a task per
token: the upstream connection hands each read to the upstream's decoder as it arrives
(`service.upstream.transport`, `BodySource.deliver`), and everything after that is plain calls
down to a synchronous write on the client's socket (`service.http.server_protocol`,
`DirectBody.write`):

    upstream socket read ─▶ decoder (PushSource) ─▶ UpstreamSink: ChatStream (service.pipeline)
                        ─▶ ResponseSink: ChatStreamResponse (service.http.stream_response)
                        ─▶ the client's socket

The stream's task waits for the end only (the terminal batch goes out through the server's
`send`, which completes the response). A task wake-up per token, the frames between the task
and the read, and the server's `send` coroutine are what this takes off every token (issue #16,
bench/RESULTS.md). Pulling (`__anext__`) stays the way for every other consumer and source:
resumable streams, the demo model, a proxy's transport, servers without the direct body.

Flow control goes the other way: a client whose socket buffer is full pauses the upstream's
reading (`pause`), and its draining resumes it, so a slow client holds no more than a socket
buffer of the answer, as when pulling.

Every sink method runs inside a socket callback: none may raise or wait. Whatever goes wrong is
handed down (`ResponseSink.failed`), where the response ends the stream as it would have when
pulling.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, cast

from service.events import ResponseBatch, UpstreamBatch


class UpstreamSink(Protocol):
    """Takes one stream's upstream batches as they are decoded."""

    def batch(self, batch: UpstreamBatch) -> None:
        """What one upstream read completed (never empty; a `Failed` is last, and ends it)."""
        ...

    def end(self) -> None:
        """Nothing follows: the upstream's answer is over (after a `Failed`, ignored)."""
        ...


# What a source pushes into: an `UpstreamSink` (an upstream's stream), a `ResponseSink` (the
# pipeline, `service.pipeline.ChatStream`).
SinkT_contra = TypeVar("SinkT_contra", contravariant=True)


class PushSource(Protocol[SinkT_contra]):
    """A stream that can push the rest of its batches into a sink, and be paused meanwhile."""

    def push(self, sink: SinkT_contra) -> bool:
        """From now on, hand every batch to `sink` from the socket callback that read it (what
        was already read, at once); False (and nothing changed) when this stream cannot, or is
        over: pull it instead. Closing the stream stops the pushing."""
        ...

    def pause(self) -> None:
        """Read nothing from the upstream until `resume` (the client's buffer is full)."""
        ...

    def resume(self) -> None: ...


def pushable(stream: object) -> PushSource[Any] | None:
    """`stream` when it can push (it has `push`, and so `pause` and `resume`), else None. An
    attribute test: `isinstance` against a runtime-checkable protocol walks every member on
    each call, a measurable part of a request (issue #16)."""
    return cast("PushSource[Any]", stream) if hasattr(stream, "push") else None


class ResponseSink(Protocol):
    """Takes one stream's response batches, from the same callbacks."""

    def batch(self, batch: ResponseBatch) -> None:
        """The response events one upstream read made (a terminal event is last, and ends it)."""
        ...

    def failed(self, error: Exception) -> None:
        """Relaying broke with `error` (a bug, not an upstream failure: those are events)."""
        ...
