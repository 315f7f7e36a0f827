"""Each error class: a real HTTP status before the first token, an in-band event after it."""

from __future__ import annotations

import socket

import httpx
import pytest

from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, chunk_event, error_body
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import answer_text, stream_chat


@pytest.fixture(params=["builtin", "httpx2"])
def upstream_http_client(request: pytest.FixtureRequest) -> str:
    """Both SDK transports: each must map failures and close connections the same way."""
    transport: str = request.param
    return transport


@pytest.mark.parametrize(
    ("upstream_status", "body", "expected_status", "expected_type"),
    [
        (
            401,
            error_body(
                f"Incorrect API key provided: {TEST_KEY}.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            502,
            "upstream_auth_error",
        ),
        (
            403,
            error_body("Project does not have access", "invalid_request_error"),
            502,
            "upstream_auth_error",
        ),
        (500, error_body("boom", "server_error"), 502, "upstream_unavailable"),
        (503, error_body("overloaded", "server_error"), 502, "upstream_unavailable"),
        (
            404,
            error_body(
                "The model `nope` does not exist", "invalid_request_error", "model_not_found"
            ),
            400,
            "upstream_rejected_request",
        ),
    ],
)
def test_upstream_status_errors_before_first_token(
    service: RunningService,
    upstream: FakeUpstream,
    upstream_status: int,
    body: bytes,
    expected_status: int,
    expected_type: str,
) -> None:
    upstream.queue(Reply(status=upstream_status, body=body))
    response, _ = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == expected_status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == expected_type
    assert error["message"]
    assert TEST_KEY not in response.text
    assert "sk-" not in response.text


def test_context_too_long_is_400_with_upstream_reason(
    service: RunningService, upstream: FakeUpstream
) -> None:
    reason = (
        "This model's maximum context length is 128000 tokens. "
        "However, you requested 130000 tokens."
    )
    upstream.queue(
        Reply(
            status=400, body=error_body(reason, "invalid_request_error", "context_length_exceeded")
        )
    )
    response, _ = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == reason


def test_rate_limit_keeps_retry_after(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(
        Reply(
            status=429,
            headers={"retry-after": "7"},
            body=error_body("Rate limit reached", "requests"),
        )
    )
    response, _ = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["retry_after_seconds"] == 7


@pytest.fixture
def impatient_service(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    """Gives up on an upstream that is silent for 0.3 s."""
    return service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        upstream_read_timeout_seconds=0.3,
    )


def test_timeout_before_first_token_is_504(
    impatient_service: RunningService, upstream: FakeUpstream
) -> None:
    running = impatient_service
    upstream.queue(Reply(delay_before_headers=5))
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"


def test_unreachable_upstream_is_502(service_factory: ServiceFactory) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = service_factory(
        openai_api_key=TEST_KEY, openai_base_url=f"http://127.0.0.1:{port}", upstream_max_retries=0
    )
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_unavailable"


def test_midstream_error_is_in_band_then_done(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=[(RECORDINGS / "midstream_error_stream.sse").read_bytes()]))
    response, events = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == "Partial answer"
    error = events[-2]
    assert error.event == "error"
    payload = error.json()
    assert payload["type"] == "error"
    assert payload["content"] == ""
    assert payload["error"]["type"] == "upstream_unavailable"
    assert "server had an error" in payload["error"]["message"]
    assert events[-1].data == "[DONE]"
    summary = service.wait_for_summaries(1)[0]
    assert summary["outcome"] == "error"
    assert summary["output_tokens"] == 2


def test_idle_timeout_after_first_token_is_in_band(
    impatient_service: RunningService, upstream: FakeUpstream
) -> None:
    running = impatient_service
    upstream.queue(Reply(pieces=[chunk_event(content="Hel"), chunk_event(content="lo")], hang=True))
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == "Hello"
    assert events[-2].json()["error"]["type"] == "upstream_timeout"
    assert events[-1].data == "[DONE]"
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)


def test_stream_cut_without_done_is_an_error(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=[chunk_event(content="Half")]))
    _, events = stream_chat(service.base_url, {"prompt": "hi"})
    assert answer_text(events) == "Half"
    assert events[-2].event == "error"
    assert events[-1].data == "[DONE]"


def test_unknown_route_and_method_are_json(service: RunningService) -> None:
    assert httpx.get(service.base_url + "/nope").json()["error"]["type"] == "not_found"
    response = httpx.put(service.base_url + "/api/chat/stream")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "method_not_allowed"
