"""Traces: with OTEL_EXPORTER_OTLP_ENDPOINT, one span per stream in the GenAI conventions,
exported by the real SDK over OTLP/HTTP to a stand-in collector; without it, the SDK is not
even imported (issue #10)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.otlp_collector import OTLPCollector
from testkit.service_process import service_env
from testkit.services import TEST_KEY, ServiceFactory
from testkit.sse_client import stream_chat

SPAN_KIND_CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_UNSET, STATUS_ERROR = 0, 2
TOKENS = [f" w{i}" for i in range(11)]

_LOADED = (
    "import sys; from service.app import create_app; create_app(); "
    "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('opentelemetry.')}))"
)


def loaded_opentelemetry_packages(**environment: str) -> str:
    """The `opentelemetry.*` packages loaded once an app is built in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", _LOADED],
        env=service_env(**environment),
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_the_sdk_is_loaded_only_when_an_endpoint_is_set() -> None:
    # FastAPI itself imports the OpenTelemetry API (`opentelemetry.context`); the SDK and the
    # exporter are what traces would add.
    without = loaded_opentelemetry_packages()
    assert "sdk" not in without
    assert "exporter" not in without
    with_endpoint = loaded_opentelemetry_packages(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert "'sdk'" in with_endpoint
    assert "'exporter'" in with_endpoint


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPCollector]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
    running = OTLPCollector()
    running.start()
    yield running
    running.stop()


def test_one_span_per_stream_in_the_genai_conventions(
    service_factory: ServiceFactory, upstream: FakeUpstream, collector: OTLPCollector
) -> None:
    service = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        otel_exporter_otlp_endpoint=collector.endpoint,
    )
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), delay_before_headers=0.1, pause=0.01))
    _, events = stream_chat(service.base_url, {"prompt": "secret-prompt-text"})
    upstream.queue(Reply(status=500, body=b'{"error":{"message":"down"}}'))
    assert stream_chat(service.base_url, {"prompt": "hi"})[0].status_code == 502
    completed, failed = service.wait_for_summaries(2)
    spans = collector.wait_for_spans(2)
    assert len(spans) == 2
    answered, refused = spans

    assert answered.name == "chat gpt-4o-mini"
    assert answered.kind == SPAN_KIND_CLIENT
    assert answered.resource["service.name"] == "llm-stream-service"
    attributes = answered.attributes
    assert {key: attributes[key] for key in attributes if key.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.stream": True,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.response.time_to_first_chunk": pytest.approx(
            completed["upstream_ttft_ms"] / 1000, abs=1e-6
        ),
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 11,
    }
    assert attributes["http.route"] == "/api/chat/stream"
    assert attributes["llm_stream.id"] == completed["stream_id"]
    assert attributes["llm_stream.outcome"] == "completed"
    assert "error.type" not in attributes
    assert answered.status_code == STATUS_UNSET
    # The span covers the stream, and its first token is an event at the end event's TTFT.
    ttft = events[-2].json()["metrics"]["ttft_ms"] / 1000
    assert (answered.end_ns - answered.start_ns) / 1e9 == pytest.approx(
        completed["duration_ms"] / 1000, abs=1e-5
    )
    ((name, at, event_attributes),) = answered.events
    assert name == "gen_ai.first_token"
    assert event_attributes["gen_ai.server.time_to_first_token"] == pytest.approx(ttft, abs=1e-6)
    assert (at - answered.start_ns) / 1e9 == pytest.approx(ttft, abs=1e-5)
    assert "secret-prompt-text" not in repr(answered)

    assert refused.status_code == STATUS_ERROR
    assert refused.status_message == "upstream_unavailable"
    assert refused.attributes["error.type"] == "upstream_unavailable"
    assert refused.attributes["llm_stream.outcome"] == "error"
    assert refused.attributes["llm_stream.id"] == failed["stream_id"]
    assert refused.events == []
