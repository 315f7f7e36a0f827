"""CPU per upstream chunk in the service's upstream layer, for the choices issue #2 asked about.

    python -m bench.parse_cost

The fake upstream runs in its own process (`bench.upstream_server`), so the figure is this
process's CPU time per chunk read through the real `AsyncOpenAI` client:

- the SDK's typed stream (`create(stream=True)`, a pydantic chunk per event) vs. the raw
  response (`with_streaming_response`) decoded by `service.upstream.sse_decoder`;
- the default httpx2 transport vs. the SDK's aiohttp transport (`DefaultAioHttpClient`),
  with each event arriving in its own read, as tokens do in production.

It is the measurement behind `service.upstream.openai_chat` reading the raw body.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import openai
import uvloop

from bench.upstream_server import UpstreamProcess
from service.domain import ChatMessage, CompletionParams
from service.settings import Settings
from service.upstream.openai_chat import OpenAIChatUpstream

PARAMS = CompletionParams(model="m", messages=(ChatMessage("user", "hi"),))


async def typed_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pass


async def raw_stream(client: openai.AsyncOpenAI) -> None:
    settings = Settings(_env_file=None, openai_api_key="k")
    async for _event in OpenAIChatUpstream(settings, client).stream(PARAMS):
        pass


async def measure(
    name: str,
    tokens: int,
    pause: float,
    http_client: Callable[[], openai.DefaultAsyncHttpxClient] | None,
    run: Callable[[openai.AsyncOpenAI], Awaitable[None]],
) -> None:
    upstream = UpstreamProcess(tokens, pause)
    client = openai.AsyncOpenAI(
        api_key="k",
        base_url=upstream.base_url,
        max_retries=0,
        http_client=http_client() if http_client else None,
    )
    try:
        results = []
        for _ in range(3):
            started = time.process_time()
            await run(client)
            results.append((time.process_time() - started) / tokens * 1e6)
        print(f"{name:48s} {min(results):7.1f} µs CPU per chunk (best of 3, {tokens} chunks)")
    finally:
        await client.close()
        upstream.stop()


async def main() -> None:
    aiohttp = openai.DefaultAioHttpClient
    await measure("burst, httpx2, SDK typed stream", 20_000, 0, None, typed_stream)
    await measure("burst, httpx2, raw + service decoder", 20_000, 0, None, raw_stream)
    await measure("one read per event, httpx2, SDK typed stream", 3_000, 0.0005, None, typed_stream)
    await measure(
        "one read per event, httpx2, raw + service decoder", 3_000, 0.0005, None, raw_stream
    )
    await measure(
        "one read per event, aiohttp, raw + service decoder", 3_000, 0.0005, aiohttp, raw_stream
    )


if __name__ == "__main__":
    uvloop.run(main())  # the loop the service runs on
