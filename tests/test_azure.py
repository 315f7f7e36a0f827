"""Azure OpenAI: the SDK's Azure client against the fake upstream, with Azure's stream shape."""

from __future__ import annotations

from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, split_awkwardly
from testkit.services import TEST_KEY, ServiceFactory
from testkit.sse_client import answer_text, stream_chat


def test_azure_deployment_url_auth_and_stream(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        azure_openai_endpoint=upstream.base_url,
        azure_openai_api_key=TEST_KEY,
        azure_openai_deployment="gpt4o-prod",
        upstream_max_retries=0,
    )
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
