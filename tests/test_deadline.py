"""The stream's time bounds (`service.deadline`, in `service.pipeline`): what the real-server
tests in test_hostile_upstreams.py cannot time well: the idle bound counts reads only, and a
cancellation from outside is never swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import pytest

from service.events import StreamEnded, StreamFailed, StreamStarted, TextDelta, UpstreamBatch
from testkit.pipelines import bounded, events_of


async def paced(gaps: list[float]) -> AsyncGenerator[UpstreamBatch, None]:
    for index, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield [TextDelta(str(index))]


def texts(events: Sequence[object]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextDelta)]


async def test_a_slow_consumer_is_not_upstream_silence() -> None:
    stream = bounded(paced([0, 0.01, 0.01]), max_seconds=10, idle_seconds=0.3)
    received = []
    async for batch in stream:
        received += batch
        await asyncio.sleep(0.6)  # sending to a slow client: two idle periods, no read
    assert texts(received) == ["0", "1", "2"]
    assert isinstance(received[-1], StreamEnded)


async def test_a_silent_read_ends_with_the_idle_error() -> None:
    received = await events_of(bounded(paced([0, 0.01, 5]), max_seconds=10, idle_seconds=0.3))
    assert texts(received) == ["0", "1"]
    assert isinstance(received[-1], StreamFailed)
    assert received[-1].error.error_type == "upstream_timeout"


async def test_the_deadline_also_bounds_the_first_read() -> None:
    received = await events_of(bounded(paced([5]), max_seconds=0.1, idle_seconds=0.05))
    assert len(received) == 1
    assert isinstance(received[0], StreamFailed)  # nothing said: a real HTTP error follows
    assert received[0].error.error_type == "stream_deadline"


async def test_an_outside_cancellation_is_not_swallowed() -> None:
    async def consume() -> None:
        async for _ in bounded(paced([0, 5]), max_seconds=0.2, idle_seconds=0.2):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.2)  # the deadline passes as the task is cancelled from outside
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_first_event_bound_ends_a_silent_start_with_a_timeout() -> None:
    stream = bounded(paced([5]), max_seconds=10, idle_seconds=10, first_event_seconds=0.05)
    received = await events_of(stream)
    assert len(received) == 1
    assert isinstance(received[0], StreamFailed)
    assert received[0].error.error_type == "upstream_timeout"
    assert "no token within 0.05 s" in received[0].error.message


async def test_the_first_event_bound_no_longer_applies_once_it_came() -> None:
    stream = bounded(paced([0, 0.1, 0.1]), max_seconds=10, idle_seconds=1, first_event_seconds=0.05)
    received = await events_of(stream)
    assert isinstance(received[0], StreamStarted)
    assert texts(received) == ["0", "1", "2"]
    assert isinstance(received[-1], StreamEnded)
