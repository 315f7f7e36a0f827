"""Reading the service's SSE answers as a client does, with httpx-sse (a standard client-side
parser, so the service's framing is checked by code that is not the service's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource

STREAM_PATH = "/api/chat/stream"


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str

    def json(self) -> Any:
        return json.loads(self.data)


def iter_events(response: httpx.Response) -> Iterator[SSEEvent]:
    """Each event as soon as it has arrived (the response must be streamed)."""
    for event in EventSource(response).iter_sse():
        yield SSEEvent(event.event, event.data, event.id)


def read_events(response: httpx.Response) -> list[SSEEvent]:
    """Parse a whole SSE body."""
    return list(iter_events(response))


def stream_chat(
    base_url: str, body: dict[str, Any], **kwargs: Any
) -> tuple[httpx.Response, list[SSEEvent]]:
    """POST `body` to the stream endpoint and read the whole answer: the response and its
    events, or no events when the status is not 200 (the body is read, for `.json()`)."""
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", base_url + STREAM_PATH, json=body, **kwargs) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response, []
        return response, read_events(response)


def answer_text(events: list[SSEEvent]) -> str:
    """The answer's text: every event's `content`, joined."""
    return "".join(e.json()["content"] for e in events if e.data != "[DONE]")
