"""`/v1` keeps every guarantee of the service's own route (issue #8), seen at the HTTP level:
heartbeats while the model thinks, the upstream closed when the client leaves before anything
was sent, real statuses in OpenAI's error shape before the first byte, limits, body caps, the
shutdown drain, and the first-token deadline."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, error_body
from testkit.openai_fakes import chat_completion_body
from testkit.raw_client import open_stream
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from tests.test_cancellation import assert_cancelled, assert_upstream_closed_promptly

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
ERROR_KEYS = {"message", "type", "param", "code"}


def openai_error(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of an OpenAI-shaped error response, checked for its shape."""
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    error: dict[str, Any] = body["error"]
    return error


def started(factory: ServiceFactory, upstream: FakeUpstream, **overrides: Any) -> RunningService:
    """The service on the fake upstream, without SDK retries, with `overrides`."""
    settings: dict[str, Any] = {
        "openai_api_key": TEST_KEY,
        "openai_base_url": upstream.base_url + "/v1",
        "upstream_max_retries": 0,
    }
    running: RunningService = factory(**{**settings, **overrides})
    return running


@pytest.fixture
def patient_service(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    """Sends a heartbeat after 0.3 s without a byte."""
    return started(service_factory, upstream, heartbeat_seconds=0.3)


def test_heartbeat_while_waiting_for_the_first_token(
    patient_service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(delay_before_headers=1.2, pieces=answer_pieces([" late"])))
    reads: list[bytes] = []
    with httpx.stream(
        "POST", patient_service.base_url + "/v1/chat/completions", json=CHAT, timeout=30
    ) as response:
        assert response.status_code == 200
        reads.extend(response.iter_raw())
    body = b"".join(reads)
    assert reads[0] == b": ping\n\n"  # went out with the headers, long before the answer
    assert body.index(b": ping") < body.index(b"data: ")
    assert body.endswith(b"data: [DONE]\n\n")


def test_a_json_answer_has_no_heartbeat_and_keeps_its_real_status(
    patient_service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(
            status=429,
            delay_before_headers=1.0,
            headers={"retry-after": "3"},
            body=error_body("Rate limit reached", "requests"),
        )
    )
    body = {**CHAT, "stream": False}
    response = httpx.post(patient_service.base_url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-should-retry"] == "true"
    assert openai_error(response) == {
        "message": "the upstream is rate limiting requests",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
    }


@pytest.mark.parametrize(
    ("path", "stream"),
    [
        ("/v1/chat/completions", True),
        ("/v1/chat/completions", False),
        ("/v1/responses", True),
        ("/v1/responses", False),
    ],
)
def test_leaving_before_the_upstream_answers_closes_it(
    service: RunningService, upstream: FakeUpstream, path: str, stream: bool
) -> None:
    upstream.queue(Reply(delay_before_headers=30, body=chat_completion_body("never")))
    body = {"model": "m", "stream": stream, "messages": MESSAGES, "input": "hi"}
    if path == "/v1/responses":
        body.pop("messages")
    sock = open_stream(service.host_port, body, path=path)
    assert upstream.wait_for(lambda: len(upstream.exchanges) == 1)
    time.sleep(0.2)
    closed_at = time.monotonic()
    sock.close()
    assert_upstream_closed_promptly(upstream, closed_at)
    assert assert_cancelled(service)["endpoint"] == path


def test_leaving_while_the_sdk_waits_to_retry_makes_no_new_request(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = started(service_factory, upstream, upstream_max_retries=3)
    # The service's SDK honours Retry-After: it sleeps 2 s before retrying.
    upstream.default_reply = Reply(
        status=503, headers={"retry-after": "2"}, body=b'{"error":{"message":"busy"}}'
    )
    sock = open_stream(running.host_port, CHAT, path="/v1/chat/completions")
    assert upstream.wait_for(lambda: len(upstream.exchanges) == 1)
    time.sleep(0.3)
    sock.close()
    time.sleep(3.0)
    assert len(upstream.exchanges) == 1
    assert assert_cancelled(running)["endpoint"] == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (json.dumps({**CHAT, "messages": []}).encode(), "messages"),
        (json.dumps({**CHAT, "stream": "yes"}).encode(), "stream"),
        (json.dumps({**CHAT, "model": 7}).encode(), "model"),
        (json.dumps({**CHAT, "max_completion_tokens": 10**6}).encode(), "max_completion_tokens"),
        (json.dumps({**CHAT, "messages": MESSAGES * 600}).encode(), "messages"),
    ],
)
def test_bad_requests_are_400_naming_the_parameter(
    service: RunningService, upstream: FakeUpstream, body: bytes, param: str | None
) -> None:
    response = httpx.post(service.base_url + "/v1/chat/completions", content=body, timeout=30)
    assert response.status_code == 400
    error = openai_error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert upstream.exchanges == []


def test_responses_limits_name_their_fields(service: RunningService) -> None:
    response = httpx.post(
        service.base_url + "/v1/responses",
        json={"model": "m", "input": "x" * 400_001},
        timeout=30,
    )
    assert response.status_code == 400
    error = openai_error(response)
    assert error["param"] == "input"
    assert "MAX_INPUT_CHARS" in error["message"]


def test_body_over_the_cap_is_413(service_factory: ServiceFactory, upstream: FakeUpstream) -> None:
    running = started(service_factory, upstream, max_body_bytes=2048)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    response = httpx.post(running.base_url + "/v1/chat/completions", json=big, timeout=30)
    assert response.status_code == 413
    assert openai_error(response)["code"] == "payload_too_large"


def test_unknown_v1_route_is_an_openai_404(service: RunningService) -> None:
    response = httpx.post(service.base_url + "/v1/embeddings", json={"input": "x"}, timeout=30)
    assert response.status_code == 404
    assert openai_error(response)["code"] == "not_found"
    # The service's own routes keep their own shape.
    native = httpx.post(service.base_url + "/api/nothing", json={}, timeout=30)
    assert set(native.json()["error"]) == {"type", "message", "retryable"}


def test_stream_slots_apply(service_factory: ServiceFactory, upstream: FakeUpstream) -> None:
    running = started(service_factory, upstream, max_concurrent_streams=1)
    upstream.queue(Reply(pieces=answer_pieces([" a"] * 50), pause=0.05))
    with httpx.stream(
        "POST", running.base_url + "/v1/chat/completions", json=CHAT, timeout=30
    ) as first:
        assert first.status_code == 200
        second = httpx.post(running.base_url + "/v1/responses", json={"input": "x"}, timeout=30)
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
        assert openai_error(second)["code"] == "too_many_streams"
        first.read()
    # The slot is given back when the stream ends.
    upstream.queue(Reply(pieces=answer_pieces([" b"])))
    assert httpx.post(running.base_url + "/v1/chat/completions", json=CHAT).status_code == 200


def test_first_token_deadline_is_a_504(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = started(service_factory, upstream, first_token_timeout_seconds=0.5)
    upstream.queue(Reply(pieces=answer_pieces([" late"]), delay_before_headers=5))
    response = httpx.post(running.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
    assert response.status_code == 504
    assert openai_error(response)["code"] == "upstream_timeout"


def test_shutdown_refuses_new_streams_and_cuts_open_ones_in_band(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = started(service_factory, upstream, shutdown_grace_seconds=0.5)
    upstream.queue(Reply(pieces=answer_pieces([" t"] * 400), pause=0.02))
    with httpx.stream(
        "POST", running.base_url + "/v1/chat/completions", json=CHAT, timeout=30
    ) as response:
        reads = response.iter_raw()
        first = next(reads)
        running.begin_shutdown()
        late = httpx.post(running.base_url + "/v1/chat/completions", json=CHAT, timeout=30)
        body = first + b"".join(reads)
    assert late.status_code == 503
    assert late.headers["x-should-retry"] == "true"
    assert openai_error(late)["code"] == "server_shutting_down"
    events = [line for line in body.split(b"\n\n") if line]
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "server_shutting_down"
    assert b"[DONE]" not in body
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)
    (record,) = running.wait_for_summaries(1)
    assert record["outcome"] == "error"
    assert record["error_type"] == "server_shutting_down"
