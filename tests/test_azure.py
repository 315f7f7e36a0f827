"""Azure OpenAI: the SDK's Azure client against the fake upstream, with Azure's stream shape."""

from __future__ import annotations

import json

import httpx
import pytest

from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, split_awkwardly
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import answer_text, stream_chat


@pytest.fixture
def azure(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    running: RunningService = service_factory(
        azure_openai_endpoint=upstream.base_url,
        azure_openai_api_key=TEST_KEY,
        azure_openai_deployment="gpt4o-prod",
        upstream_max_retries=0,
    )
    return running


def test_azure_deployment_url_auth_and_stream(
    azure: RunningService, upstream: FakeUpstream
) -> None:
    running = azure
    upstream.queue(
        Reply(pieces=list(split_awkwardly((RECORDINGS / "azure_chat_stream.sse").read_bytes())))
    )
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == "Azure says hi."
    assert events[0].json()["model"] == "gpt4o-prod"
    sent = upstream.exchanges[0]
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == TEST_KEY
    assert "authorization" not in sent.headers


def test_v1_defaults_to_the_deployment_and_passes_filter_results(
    azure: RunningService, upstream: FakeUpstream
) -> None:
    azure_stream = (RECORDINGS / "azure_chat_stream.sse").read_bytes()
    upstream.queue(Reply(pieces=list(split_awkwardly(azure_stream))))
    # No `model`: the SDKs always send one, but a plain HTTP client may not.
    response = httpx.post(
        azure.base_url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    )
    sent = upstream.exchanges[0]
    assert sent.path == "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    assert sent.json()["model"] == "gpt4o-prod"
    payloads = [
        line.removeprefix("data: ")
        for line in response.text.split("\n")
        if line.startswith("data: ")
    ]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert "prompt_filter_results" in chunks[0]
    assert any(
        choice.get("content_filter_results", {}).get("hate")
        for chunk in chunks
        for choice in chunk["choices"]
    )
    # Byte for byte: every upstream event (the recording has no usage chunk to hold back).
    upstream_payloads = [
        line.removeprefix(b"data: ")
        for line in azure_stream.split(b"\n")
        if line.startswith(b"data: ")
    ]
    assert [payload.encode() for payload in payloads] == upstream_payloads
