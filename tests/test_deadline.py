"""`within_deadline`: what the real-server tests in test_hostile_upstreams.py cannot time well:
the idle bound counts reads only, and a cancellation from outside is never swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from service.deadline import within_deadline
from service.events import Failed, TextDelta, UpstreamBatch, UpstreamEvent


async def paced(gaps: list[float]) -> AsyncGenerator[UpstreamBatch, None]:
    for index, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield [TextDelta(str(index))]


async def events_of(batches: AsyncGenerator[UpstreamBatch, None]) -> list[UpstreamEvent]:
    return [event async for batch in batches for event in batch]


async def test_a_slow_consumer_is_not_upstream_silence() -> None:
    batches = within_deadline(paced([0, 0.01, 0.01]), max_seconds=10, idle_seconds=0.1)
    received = []
    async for batch in batches:
        received += batch
        await asyncio.sleep(0.3)  # sending to a slow client: three idle periods, no read
    assert received == [TextDelta("0"), TextDelta("1"), TextDelta("2")]


async def test_a_silent_read_ends_with_the_idle_error() -> None:
    events = within_deadline(paced([0, 0.01, 5]), max_seconds=10, idle_seconds=0.1)
    received = await events_of(events)
    assert received[:2] == [TextDelta("0"), TextDelta("1")]
    assert isinstance(received[2], Failed)
    assert received[2].error.error_type == "upstream_timeout"


async def test_the_deadline_also_bounds_the_first_read() -> None:
    events = within_deadline(paced([5]), max_seconds=0.1, idle_seconds=0.05)
    received = await events_of(events)
    assert len(received) == 1
    assert isinstance(received[0], Failed)
    assert received[0].error.error_type == "stream_deadline"


async def test_an_outside_cancellation_is_not_swallowed() -> None:
    async def consume() -> None:
        async for _ in within_deadline(paced([0, 5]), max_seconds=0.2, idle_seconds=0.2):
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.2)  # the deadline passes as the task is cancelled from outside
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_first_event_bound_ends_a_silent_start_with_a_timeout() -> None:
    events = within_deadline(paced([5]), max_seconds=10, idle_seconds=10, first_event_seconds=0.05)
    received = await events_of(events)
    assert len(received) == 1
    assert isinstance(received[0], Failed)
    assert received[0].error.error_type == "upstream_timeout"
    assert "no token within 0.05 s" in received[0].error.message


async def test_the_first_event_bound_no_longer_applies_once_it_came() -> None:
    events = within_deadline(
        paced([0, 0.1, 0.1]), max_seconds=10, idle_seconds=1, first_event_seconds=0.05
    )
    received = await events_of(events)
    assert received == [TextDelta("0"), TextDelta("1"), TextDelta("2")]
