"""The first-token timeout: the upstream must produce its first event in time.

The SDK's read timeout bounds each silence (the idle timeout between chunks, and the wait for
response headers); this bounds the whole wait for the first token, retries included. Hitting it
cancels the upstream read, which closes the upstream request, and ends the stream with a
`Failed(UpstreamTimeout)`: a 504 before headers, an in-band error after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.errors import UpstreamTimeout
from service.events import Failed, UpstreamEvent


async def first_event_within(
    events: AsyncGenerator[UpstreamEvent, None], seconds: float
) -> AsyncGenerator[UpstreamEvent, None]:
    async with aclosing(events):
        try:
            async with asyncio.timeout(seconds):
                first = await anext(events)
        except TimeoutError:
            yield Failed(UpstreamTimeout(f"the upstream sent no token within {seconds:g} s"))
            return
        except StopAsyncIteration:
            return
        yield first
        async for event in events:
            yield event
