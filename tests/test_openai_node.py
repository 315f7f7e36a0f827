"""The official `openai` npm package against `/v1` (issue #8): a Node app streams chat
completions from the service with only its base URL changed.

`tests/node/` holds the package and its lock file; `make test` runs `npm ci` there first.
Each test arranges the fake upstream, runs one scenario of `tests/node/chat_stream.mjs` in a
real Node process, and checks what the client saw (one JSON line) and what the upstream saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event, split_awkwardly
from testkit.openai_fakes import responses_pieces, tool_call_pieces
from testkit.services import RunningService
from tests.test_cancellation import assert_upstream_closed_promptly

NODE_TESTS = Path(__file__).parent / "node"
TOKENS = [" Hello", ",", " world", "!"]


def run_node(scenario: str, service: RunningService) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is not installed: `make test` installs it (scripts/install-system-deps.sh)"
    assert (NODE_TESTS / "node_modules" / "openai").is_dir(), (
        "the openai npm package is not installed: `make test` runs `npm ci` in tests/node"
    )
    finished = subprocess.run(
        [node, "chat_stream.mjs", scenario, service.base_url + "/v1"],
        cwd=NODE_TESTS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def test_stream_with_usage(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=list(split_awkwardly(b"".join(answer_pieces(TOKENS))))))
    seen = run_node("usage", service)
    assert seen["text"] == "".join(TOKENS)
    assert seen["finishReason"] == "stop"
    assert seen["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert upstream.exchanges[0].json()["stream_options"] == {"include_usage": True}


def test_stream_without_usage(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=0.01))
    seen = run_node("plain", service)
    assert seen["text"] == "".join(TOKENS)
    assert seen["usage"] is None
    # Usage still reached the log: it was asked for upstream and held back.
    (record,) = service.wait_for_summaries(1)
    assert record["usage"]["completion_tokens"] == 4


def test_tool_call_fragments_reassemble(service: RunningService, upstream: FakeUpstream) -> None:
    arguments = ['{"ci', 'ty": "Os', "lo", '"}']
    upstream.queue(
        Reply(
            pieces=list(
                split_awkwardly(b"".join(tool_call_pieces("call_9", "get_weather", arguments)))
            )
        )
    )
    seen = run_node("tools", service)
    assert seen["toolCalls"] == [
        {"id": "call_9", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    ]
    assert seen["finishReason"] == "tool_calls"
    assert upstream.exchanges[0].json()["tools"] == [
        {"type": "function", "function": {"name": "get_weather"}}
    ]


def test_mid_stream_error_is_api_error(service: RunningService, upstream: FakeUpstream) -> None:
    failure = b'data: {"error": {"message": "The server had an error"}}\n\n'
    start = [chunk_event(role="assistant", content=""), chunk_event(content=" Hi")]
    upstream.queue(Reply(pieces=[*start, failure]))
    seen = run_node("error", service)
    assert seen["text"] == " Hi"
    assert seen["isAPIError"]
    assert "The server had an error" in seen["message"]
    assert seen["code"] == "upstream_unavailable"


def test_rate_limit_is_rate_limit_error(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(
        Reply(status=429, headers={"retry-after": "7"}, body=b'{"error": {"message": "slow"}}')
    )
    seen = run_node("error", service)
    assert seen["error"] == "RateLimitError"
    assert seen["status"] == 429
    assert seen["retryAfter"] == "7"


def test_breaking_out_closes_the_upstream(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces([f" t{i}" for i in range(300)]), pause=0.02))
    seen = run_node("abort", service)
    closed_at = time.monotonic()  # at the latest: the Node process has exited
    assert seen["chunks"] == 4
    assert_upstream_closed_promptly(upstream, closed_at)
    (record,) = service.wait_for_summaries(1)
    assert record["outcome"] == "cancelled"


@pytest.mark.parametrize("split", [False, True])
def test_responses_stream(service: RunningService, upstream: FakeUpstream, split: bool) -> None:
    pieces = responses_pieces(TOKENS)
    upstream.queue(Reply(pieces=list(split_awkwardly(b"".join(pieces))) if split else pieces))
    seen = run_node("responses", service)
    assert seen["text"] == "".join(TOKENS)
    assert seen["types"][0] == "response.created"
    assert seen["types"][-1] == "response.completed"
    assert seen["usage"]["output_tokens"] == 4
