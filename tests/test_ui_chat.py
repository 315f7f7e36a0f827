"""`POST /api/chat`: useChat's body in, the AI SDK's UI message stream (protocol v1) out.

Through a real uvicorn and the real openai client against the fake upstream; the chunks are read
with httpx-sse, and `tests/node` reads the same endpoint with the `ai` package's own parser.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event, error_body
from testkit.services import RunningService
from testkit.sse_client import answer_text, read_events, stream_chat

TOKENS = [" Hello", ",", ' "world"', "\n", " 😀"]


def ui_body(*texts: str, **extra: Any) -> dict[str, Any]:
    """useChat's body: alternating user/assistant UI messages, the last one the user's."""
    roles = ["user", "assistant"]
    messages = [
        {
            "id": f"m{index}",
            "role": roles[index % 2],
            "parts": [{"type": "text", "text": text}],
        }
        for index, text in enumerate(texts)
    ]
    return {"id": "chat-1", "messages": messages, "trigger": "submit-message", **extra}


def chat(service: RunningService, body: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", service.base_url + "/api/chat", json=body) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response, []
        events = read_events(response)
    assert events[-1].data == "[DONE]"
    return response, [event.json() for event in events[:-1]]


def reasoning_event(text: str) -> bytes:
    chunk = {
        "id": "chatcmpl-r",
        "object": "chat.completion.chunk",
        "created": 1763700000,
        "model": "deepseek-reasoner",
        "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_text_streams_as_ui_message_chunks(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    response, chunks = chat(service, ui_body("Hi"))
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    types = [chunk["type"] for chunk in chunks]
    assert types == [
        "start",
        "start-step",
        "text-start",
        *["text-delta"] * len(TOKENS),
        "text-end",
        "finish-step",
        "finish",
    ]
    assert chunks[0]["messageId"].startswith("chat-")
    deltas = [chunk for chunk in chunks if chunk["type"] == "text-delta"]
    assert "".join(chunk["delta"] for chunk in deltas) == "".join(TOKENS)
    assert {chunk["id"] for chunk in deltas} == {chunks[2]["id"]} == {chunks[-3]["id"]}
    finish = chunks[-1]
    assert finish["finishReason"] == "stop"
    metadata = finish["messageMetadata"]
    assert metadata["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert metadata["ttft_ms"] > 0
    assert metadata["output_tokens"] == 5
    assert service.wait_for_summaries(1)[-1]["endpoint"] == "/api/chat"


def test_history_becomes_chat_messages(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" fine"])))
    body = ui_body("Hi", "Hello! How can I help?", "How are you?")
    # What useChat keeps in an assistant message besides its text: ignored, not sent on.
    body["messages"][1]["parts"] = [
        {"type": "step-start"},
        {"type": "reasoning", "text": "The user greets me.", "state": "done"},
        {"type": "text", "text": "Hello! ", "state": "done"},
        {"type": "text", "text": "How can I help?", "state": "done"},
    ]
    body["messages"][1]["metadata"] = {"ttft_ms": 12.5}
    response, _ = chat(service, body)
    assert response.status_code == 200
    sent = upstream.exchanges[0].json()["messages"]
    assert sent == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "How are you?"},
    ]


def test_reasoning_streams_as_reasoning_parts(
    service: RunningService, upstream: FakeUpstream
) -> None:
    pieces = [reasoning_event("Let me"), reasoning_event(" think."), *answer_pieces([" 42"])]
    upstream.queue(Reply(pieces=pieces))
    _, chunks = chat(service, ui_body("Meaning of life?"))
    types = [chunk["type"] for chunk in chunks]
    assert types == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    thought = "".join(c["delta"] for c in chunks if c["type"] == "reasoning-delta")
    assert thought == "Let me think."


@pytest.mark.parametrize(
    ("reason", "spelt"),
    [("length", "length"), ("content_filter", "content-filter"), ("tool_calls", "tool-calls")],
)
def test_finish_reason_in_the_sdk_spelling(
    service: RunningService, upstream: FakeUpstream, reason: str, spelt: str
) -> None:
    upstream.queue(Reply(pieces=[chunk_event(content="x"), chunk_event(finish_reason=reason)]))
    _, chunks = chat(service, ui_body("Hi"))
    assert chunks[-1] == {**chunks[-1], "type": "finish", "finishReason": spelt}


def test_error_before_the_first_token_is_an_http_error(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(status=429, headers={"retry-after": "7"}, body=error_body("slow", "x")))
    response, _ = chat(service, ui_body("Hi"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["retryable"] is True


def test_error_after_the_first_token_is_an_error_chunk(
    service: RunningService, upstream: FakeUpstream
) -> None:
    broken = b'data: {"error": {"message": "model overloaded", "type": "server_error"}}\n\n'
    upstream.queue(Reply(pieces=[chunk_event(content="Hel"), broken]))
    _, chunks = chat(service, ui_body("Hi"))
    assert [chunk["type"] for chunk in chunks[-2:]] == ["text-end", "error"]
    assert "model overloaded" in chunks[-1]["errorText"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "user", "parts": [{"type": "file", "url": "data:,x"}]}]},
            "part type 'file' is not supported",
        ),
        (
            {"messages": [{"role": "user", "parts": [{"type": "tool-weather"}]}]},
            "part type 'tool-weather'",
        ),
        ({"messages": [{"role": "user", "parts": [{"type": "text"}]}]}, "string 'text'"),
        ({"messages": [{"role": "robot", "parts": []}]}, "messages.0.role"),
        ({**ui_body("Hi"), "temprature": 1}, "temprature"),
        ({**ui_body("Hi"), "max_tokens": True}, "max_tokens"),
    ],
)
def test_bad_bodies_are_422_naming_the_problem(
    service: RunningService, upstream: FakeUpstream, body: Any, named: str
) -> None:
    response = httpx.post(service.base_url + "/api/chat", json=body, timeout=30)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]
    assert upstream.exchanges == []


def test_stop_aborting_the_fetch_closes_the_upstream(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" w"] * 200), pause=0.05))
    host, port = service.host_port
    payload = json.dumps(ui_body("Hi")).encode()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        sock.settimeout(10)
        received = b""
        while received.count(b"text-delta") < 3:
            received += sock.recv(65536)
        closed_at = time.monotonic()
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)
    disconnected_at = upstream.exchanges[0].disconnected_at
    assert disconnected_at is not None
    assert disconnected_at - closed_at < 1.0  # generous: milliseconds expected
    assert len(upstream.exchanges) == 1
    summaries = service.wait_for_summaries(1)
    assert summaries[-1]["outcome"] == "cancelled"


def test_native_formats_carry_the_answer_only(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=[reasoning_event("hidden"), *answer_pieces([" 42"])]))
    response, events = stream_chat(service.base_url, {"prompt": "Meaning of life?"})
    assert response.status_code == 200
    assert answer_text(events) == " 42"
    assert [event.event for event in events[:2]] == ["start", "message"]
