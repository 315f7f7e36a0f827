"""What odd upstreams send: quota errors, absurd headers, unreadable JSON, reasoning usage,
and error text that carries a key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.events import Usage
from service.metrics import StreamRecorder
from service.upstream.redaction import safe_message
from testkit.fake_upstream import FakeUpstream, Reply, chunk_event, error_body
from testkit.services import TEST_KEY, RunningService, make_settings
from testkit.sse_client import stream_chat

AZURE_STYLE_KEY = "0123456789abcdef0123456789abcdef"


def test_quota_exhausted_is_not_a_retryable_rate_limit(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(
        Reply(
            status=429,
            headers={"retry-after": "1"},
            body=error_body(
                "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
            ),
        )
    )
    response, _ = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_quota_exhausted"
    assert error["retryable"] is False
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-5", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_absurd_retry_after_is_bounded(
    service: RunningService, upstream: FakeUpstream, value: str
) -> None:
    upstream.queue(Reply(status=429, headers={"retry-after": value}, body=error_body("slow", "x")))
    response, _ = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 3600


@pytest.mark.parametrize(
    "payload",
    [b"[" * 100_000 + b"]" * 100_000, b'{"choices": 5}', b'{"choices": [{"delta": "x"}]}', b"1"],
)
def test_unreadable_upstream_events_end_the_stream_cleanly(
    service: RunningService, upstream: FakeUpstream, payload: bytes
) -> None:
    upstream.queue(Reply(pieces=[chunk_event(content="Hi"), b"data: " + payload + b"\n\n"]))
    response, events = stream_chat(service.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert events[-1].data == "[DONE]"
    assert events[-2].event in ("error", "end")


def test_tokens_per_second_leaves_out_hidden_reasoning() -> None:
    recorder = StreamRecorder(stream_id="s", model="o", provider="openai", received_at=0.0)
    recorder.first_text_at, recorder.last_text_at = 10.0, 12.0
    recorder.usage = Usage(5, 2101, 2106, reasoning_tokens=2000)
    metrics = recorder.metrics()
    assert metrics.output_tokens == 2101
    assert metrics.tokens_per_second == 50.0  # (101 visible - 1) / 2 s


def test_redaction_happens_before_truncation_and_spares_words() -> None:
    secrets = [AZURE_STYLE_KEY]
    straddling = "x" * 490 + " " + AZURE_STYLE_KEY + " tail"
    message = safe_message({"error": {"message": straddling}}, secrets=secrets, fallback="f")
    assert AZURE_STYLE_KEY[:8] not in message
    words = "task-specific token_limit_exceeded key-value: use sk-abc12345678 please"
    kept = safe_message({"error": {"message": words}}, secrets=secrets, fallback="f")
    assert kept == "task-specific token_limit_exceeded key-value: use [redacted] please"


def test_blank_service_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="SERVICE_API_KEYS"):
        make_settings(openai_api_key=TEST_KEY, service_api_keys=" , ")
