"""Resumable streams for the AI SDK's `useChat` (`POST /api/chat`, issue #13): the chat's id
names its active stream, `GET /api/chat/{chat_id}/stream` replays it from `start` and follows
it (what `useChat({resume: true})` asks on load), and a chat id stops its stream. Also: SSE ids
skip reasoning events, and resuming counts them as the client did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.sse_client import iter_events, read_events
from tests.test_resume import ResumingFactory, resuming, text_of
from tests.test_ui_chat import reasoning_event, ui_body

__all__ = ["resuming"]  # the fixture, imported so that pytest finds it in this module

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
# The `ai` package's own reconnect, as `useChat({resume: true})` makes it on load: its
# `DefaultChatTransport` GETs `<api>/<chat id>/stream` (null on 204), and `readUIMessageStream`
# rebuilds the message from the chunks. Run by node from frontend/, where `ai` is installed.
RECONNECT = """
import { DefaultChatTransport, readUIMessageStream } from "ai";
const transport = new DefaultChatTransport({ api: process.env.CHAT_API });
const stream = await transport.reconnectToStream({ chatId: process.env.CHAT_ID });
if (stream === null) {
  console.log(JSON.stringify({ resumed: false }));
} else {
  let last;
  for await (const message of readUIMessageStream({ stream })) last = message;
  const text = last.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  console.log(JSON.stringify({ resumed: true, id: last.id, text }));
}
"""

TOKENS = [f" t{i}" for i in range(30)]
ANSWER = "".join(TOKENS)
PAUSE = 0.04


def ui_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta")


def test_usechat_resumes_the_chats_active_stream_from_its_start(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    producer, other = resuming(), resuming()
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer.base_url + "/api/chat", json=ui_body("hi")) as response,
    ):
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        head = [event.json() for event in islice(iter_events(response), 5)]
    # The page reloads: useChat asks the other replica for the chat's active stream.
    resumed = httpx.get(other.base_url + "/api/chat/chat-1/stream", timeout=30)
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    events = read_events(resumed)
    chunks = [event.json() for event in events[:-1]]
    assert events[-1].data == "[DONE]"
    assert chunks[0] == head[0]  # the same `start`, with the same messageId
    assert chunks[0]["messageId"] == resumed.headers["x-stream-id"]
    assert ui_text(chunks) == ANSWER
    assert chunks[-1]["type"] == "finish"
    assert len(upstream.exchanges) == 1
    # Once it has ended, there is nothing to resume; nor for another chat.
    assert httpx.get(other.base_url + "/api/chat/chat-1/stream").status_code == 204
    assert httpx.get(other.base_url + "/api/chat/chat-2/stream").status_code == 204


def ai_sdk_reconnect(api: str, chat_id: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (FRONTEND / "node_modules" / "ai").is_dir():
        pytest.fail(
            "node and frontend/node_modules are needed: run `make frontend` (make test does)"
        )
    run = subprocess.run(
        [node, "--input-type=module", "-e", RECONNECT],
        cwd=FRONTEND,
        env={**os.environ, "CHAT_API": api, "CHAT_ID": chat_id},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_the_ai_sdks_own_reconnect_resumes_the_answer_on_the_other_replica(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    producer, other = resuming(), resuming()
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer.base_url + "/api/chat", json=ui_body("hi")) as response,
    ):
        start = next(iter_events(response)).json()
    resumed = ai_sdk_reconnect(other.base_url + "/api/chat", "chat-1")
    assert resumed == {"resumed": True, "id": start["messageId"], "text": ANSWER}
    assert ai_sdk_reconnect(other.base_url + "/api/chat", "chat-1") == {"resumed": False}
    assert len(upstream.exchanges) == 1


def test_a_chat_id_stops_its_active_stream(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    producer, other = resuming(), resuming()
    upstream.queue(Reply(pieces=answer_pieces([f" w{i}" for i in range(300)]), pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer.base_url + "/api/chat", json=ui_body("hi")) as response,
    ):
        events = iter_events(response)
        next(events)
        stopped = client.post(other.base_url + "/api/chat/chat-1/stop")
        rest = [event.json() for event in events if event.data != "[DONE]"]
    assert stopped.json()["status"] == "stopped"
    assert rest[-1]["type"] == "finish"
    exchange = upstream.exchanges[0]
    assert upstream.wait_for(lambda: exchange.disconnected_at is not None)


def test_with_api_keys_a_chat_is_only_its_keys(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    service = resuming(service_api_keys="first-key,second-key")
    upstream.queue(Reply(pieces=answer_pieces([f" w{i}" for i in range(300)]), pause=PAUSE))
    first = {"Authorization": "Bearer first-key"}
    second = {"Authorization": "Bearer second-key"}
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", service.base_url + "/api/chat", json=ui_body("hi"), headers=first
        ) as response,
    ):
        next(iter_events(response))
        elsewhere = client.get(service.base_url + "/api/chat/chat-1/stream", headers=second)
        stop = client.post(service.base_url + "/api/chat/chat-1/stop", headers=second)
    assert elsewhere.status_code == 204
    assert stop.status_code == 404


def test_sse_ids_skip_reasoning_and_resuming_counts_as_the_client_did(
    resuming: ResumingFactory, upstream: FakeUpstream
) -> None:
    producer, other = resuming(), resuming()
    thinking = [reasoning_event(f" r{i}") for i in range(5)]
    pieces = [*thinking, *answer_pieces(TOKENS)]
    upstream.queue(Reply(pieces=pieces, pause=PAUSE))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", producer.base_url + "/api/chat/stream", json={"message": "x"}) as r,
    ):
        first = list(islice(iter_events(r), 4))
    stream_id = first[0].json()["id"]
    rest = read_events(
        httpx.get(
            other.base_url + f"/api/chat/stream/{stream_id}",
            headers={"Last-Event-ID": first[-1].id},
            timeout=30,
        )
    )
    ids = [event.id for event in first + rest]
    assert ids == [f"{stream_id}:{n}" for n in range(len(ids) - 1)] + [f"{stream_id}:done"]
    assert text_of(first) + text_of(rest) == ANSWER
