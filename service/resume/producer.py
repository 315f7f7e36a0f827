"""One resumable stream on the replica that asked the upstream: its producer, and the clients
that follow it from this replica's memory.

A resumable stream's upstream request must outlive the HTTP response that started it (the
client may come back, here or on another replica), so the producer consumes the response
events in a task of its own. It keeps every event in memory (`events[n]` is event number `n`)
for followers on this replica, and passes each one on, packed, for the writer to store
(`service.resume.hub`). Followers never slow it down: a client that reads slowly is behind in
`events`, bounded by the answer's length, and is still dropped by the response's send timeout.

A producer ends in one of these ways (its `Delivery`, recorded once, when it ends):

- the upstream's stream ends (`delivered`; the outcome is the upstream's);
- every client left and none came back, here or elsewhere, within RESUME_GRACE_SECONDS
  (`abandoned`); or the only client left before the first event, when nobody can know the
  stream's id to resume it (`client_left`, at once, as for a stream that is not resumable);
- a stop request, from any replica (`stopped`);
- the shutdown grace ran out (`shutdown`), or the service failed (`internal_error`).

A cancelled stream still ends with a terminal event for its followers and the store: an `end`
event with `finish_reason` `cancelled` (its usage and metrics so far), or the
`server_shutting_down` error. Cancelling the task closes the event chain, and so the upstream
request, as when a non-resumable client leaves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from service.errors import InternalError, server_shutting_down
from service.events import (
    ResponseBatch,
    ResponseBatches,
    ResponseEvent,
    StreamEnded,
    StreamFailed,
)
from service.metrics import StreamRecorder
from service.outcomes import Delivery
from service.resume.codec import is_terminal, pack

logger = logging.getLogger("service.resume")

CANCELLED_FINISH_REASON = "cancelled"


class Producer:
    def __init__(
        self,
        stream_id: str,
        source: ResponseBatches,
        recorder: StreamRecorder,
        *,
        format_name: str,
        caller: str | None,
        on_append: Callable[[Producer], None],
        on_end: Callable[[Producer, Delivery], None],
    ) -> None:
        """`on_append` is told when `unsent` grew (the writer takes it from there); `on_end`
        once, with how the stream ended."""
        self.stream_id = stream_id
        self.format_name = format_name
        self.caller = caller
        # The key naming this stream as a `useChat` chat's active one, kept alive with it.
        self.chat_key: str | None = None
        self.recorder = recorder
        self.events: list[ResponseEvent] = []
        self.finished = False
        # Packed events not yet taken by the writer, and whether every event so far made it
        # into the store (after a failed write the stream is no longer resumable).
        self.unsent: list[str] = []
        self.stored = True
        self.attached = 0
        self.detached_since: float | None = asyncio.get_running_loop().time()
        self._source = source
        self._on_append = on_append
        self._on_end = on_end
        self._changed = asyncio.Event()
        self._cancel_reason: Delivery | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"produce {self.stream_id}"
        )

    def _append(self, batch: ResponseBatch) -> None:
        self.events += batch
        if self.stored:
            self.unsent += [pack(event) for event in batch]
            self._on_append(self)
        self._changed.set()

    async def _run(self) -> None:
        delivery: Delivery = "internal_error"
        try:
            async with aclosing(self._source):
                async for batch in self._source:
                    self._append(batch)
            delivery = "delivered"
        except asyncio.CancelledError:
            reason = self._cancel_reason
            if reason is None:
                delivery = "shutdown"  # the loop itself is going away
                raise
            delivery = reason
            self._end_cut(reason)
        except Exception:
            logger.exception("a resumable stream failed")
            self._end_with(StreamFailed(InternalError()))
        finally:
            self.finished = True
            self._changed.set()
            self._on_end(self, delivery)

    def _end_cut(self, reason: Delivery) -> None:
        if reason == "shutdown":
            self._end_with(StreamFailed(server_shutting_down()))
        else:
            recorder = self.recorder
            self._end_with(StreamEnded(CANCELLED_FINISH_REASON, recorder.usage, recorder.metrics()))

    def _end_with(self, terminal: ResponseEvent) -> None:
        if not (self.events and is_terminal(self.events[-1])):
            self._append([terminal])

    def cancel(self, reason: Delivery) -> None:
        """End the stream now, closing its upstream request; the first reason wins."""
        if self.finished or self._cancel_reason is not None or self._task is None:
            return
        logger.info("resumable stream %s cancelled: %s", self.stream_id, reason)
        self._cancel_reason = reason
        self._task.cancel()

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.wait((self._task,))

    async def changed(self) -> None:
        """Wait for the next event (or the end). Callers check `events` first: nothing runs
        between their check and the wait."""
        self._changed.clear()
        await self._changed.wait()

    def attach(self) -> None:
        self.attached += 1
        self.detached_since = None

    def detach(self, *, abandon: bool) -> None:
        """A client here left; `abandon` when it never saw the stream's id. Without a client,
        a stream the store lost track of ends at once: nobody could resume it."""
        self.attached -= 1
        if self.attached == 0:
            self.detached_since = asyncio.get_running_loop().time()
            if abandon or not self.stored:
                self.cancel("client_left")

    def abandon_due(self, now: float, grace_seconds: float) -> bool:
        """No client here for the grace period (one elsewhere may still be reading)."""
        since = self.detached_since
        return not self.finished and since is not None and now - since >= grace_seconds


async def follow(
    producer: Producer, after: int, *, original: bool = False
) -> AsyncGenerator[ResponseBatch, None]:
    """The events after number `after`, from memory, live until the stream's terminal event,
    each time as one batch of all that came meanwhile (one write for a client that was behind).
    `original`: the client that started the stream (its leaving before the first event ends
    the stream at once)."""
    producer.attach()
    index = after + 1
    try:
        while True:
            events = producer.events
            if index < len(events):
                batch = events[index:]  # a terminal event is always the last one
                index += len(batch)
                yield batch
                if is_terminal(batch[-1]):
                    return
            elif producer.finished:
                return
            else:
                await producer.changed()
    finally:
        producer.detach(abandon=original and index == 0)
