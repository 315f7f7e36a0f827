"""The tutorial relay: a streaming chat endpoint the way blog posts write it.

    uvicorn bench.compare.relays.tutorial:app   (UPSTREAM_BASE_URL=http://127.0.0.1:PORT)

FastAPI, the async OpenAI client's typed stream (`chat.completions.create(stream=True)`, one
pydantic chunk per token), and sse-starlette's `EventSourceResponse`, run by uvicorn with its
defaults (access log on). It is a yardstick, not part of the service, which is why it imports
`openai` outside `service/upstream/openai_chat.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from openai import AsyncOpenAI
from pydantic import BaseModel
from sse_starlette import EventSourceResponse

app = FastAPI()
client = AsyncOpenAI(base_url=os.environ["UPSTREAM_BASE_URL"] + "/v1", api_key="bench")


class ChatRequest(BaseModel):
    message: str


@app.post("/chat")
async def chat(request: ChatRequest) -> EventSourceResponse:
    async def events() -> AsyncIterator[dict[str, str]]:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": request.message}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield {"data": json.dumps({"content": chunk.choices[0].delta.content})}
        yield {"data": "[DONE]"}

    return EventSourceResponse(events())
