"""`GET /metrics` after known streams: exact counts, and sums equal to the streams' own figures
(the `end` events and the per-stream log lines), in one process (issue #10)."""

from __future__ import annotations

import httpx
import pytest

from service.prometheus_metrics import TTFT_BUCKETS
from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event
from testkit.metrics_reader import scrape
from testkit.openai_fakes import chat_completion_body
from testkit.raw_client import open_stream, read_until
from testkit.redis_server import RedisServer
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import stream_chat

TOKENS = [f" w{i}" for i in range(11)]
MODEL = "gpt-4o-mini"  # the default model: named as itself
STREAM = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}
ROUTE = {"route": "/api/chat/stream"}


def against(
    service_factory: ServiceFactory, upstream: FakeUpstream, **overrides: object
) -> RunningService:
    """The service with the OpenAI provider pointed at the fake upstream."""
    return service_factory(openai_api_key=TEST_KEY, openai_base_url=upstream.base_url, **overrides)


def seconds(milliseconds: list[float]) -> float:
    return sum(milliseconds) / 1000


def test_known_streams_read_back_exactly(service: RunningService, upstream: FakeUpstream) -> None:
    ends = []
    for index, pause in enumerate((0.01, 0.02, 0.03)):
        upstream.queue(Reply(pieces=answer_pieces(TOKENS), delay_before_headers=0.05, pause=pause))
        body = {"prompt": "hi"} if index else {"prompt": "hi", "model": "someone-elses-model"}
        response, events = stream_chat(service.base_url, body)
        assert response.status_code == 200
        ends.append(events[-2].json()["metrics"])
    upstream.queue(Reply(pieces=answer_pieces(TOKENS[:3]), pause=0.01))  # a rate needs reads
    response = httpx.post(
        service.base_url + "/api/chat/stream?format=ndjson", json={"prompt": "hi"}, timeout=30
    )
    assert response.status_code == 200
    summaries = service.wait_for_summaries(4)
    assert len(summaries) == 4

    metrics = scrape(service.base_url)
    value = metrics.value
    # Labels: a model the configuration does not name is `other`; routes and formats as sent.
    assert value("llm_streams_total", outcome="completed", **STREAM, **ROUTE) == 4
    assert value("llm_streams_total", gen_ai_request_model="other", format="sse") == 1
    assert value("llm_streams_total", gen_ai_request_model=MODEL, format="sse") == 2
    assert value("llm_streams_total", gen_ai_request_model=MODEL, format="ndjson") == 1
    assert metrics.label_values("llm_streams_total", "gen_ai_request_model") == {MODEL, "other"}
    assert value("llm_streams_total", outcome="error") == 0
    assert value("llm_streams_in_flight") == 0
    assert value("llm_streams_capacity") == 200

    # Time to first token, upstream time to first chunk and their difference, per stream: the
    # sums are the sums of what the log lines (and, for SSE, the `end` events) said.
    ttft = [summary["ttft_ms"] for summary in summaries]
    upstream_ttft = [summary["upstream_ttft_ms"] for summary in summaries]
    assert [end["ttft_ms"] for end in ends] == ttft[:3]
    tolerance = 4 * 0.5e-6  # the log rounds each figure to the microsecond
    assert value("gen_ai_server_time_to_first_token_seconds_count") == 4
    assert value("gen_ai_server_time_to_first_token_seconds_sum") == pytest.approx(
        seconds(ttft), abs=tolerance
    )
    assert value("gen_ai_client_operation_time_to_first_chunk_seconds_sum") == pytest.approx(
        seconds(upstream_ttft), abs=tolerance
    )
    overhead = [total - upstream for total, upstream in zip(ttft, upstream_ttft, strict=True)]
    assert value("llm_stream_overhead_seconds_count") == 4
    assert value("llm_stream_overhead_seconds_sum") == pytest.approx(
        seconds(overhead), abs=2 * tolerance
    )
    assert value(
        "gen_ai_server_request_duration_seconds_sum", outcome="completed"
    ) == pytest.approx(seconds([summary["duration_ms"] for summary in summaries]), abs=tolerance)
    # Time per output token is 1 / tokens per second (rounded to 3 decimals in the log).
    per_token = sum(1 / summary["tokens_per_second"] for summary in summaries)
    assert value("gen_ai_server_time_per_output_token_seconds_count") == 4
    assert value("gen_ai_server_time_per_output_token_seconds_sum") == pytest.approx(
        per_token, rel=1e-3
    )
    # Tokens: the upstream's usage (7 in; 11, 11, 11 and 3 out).
    assert value("gen_ai_client_token_usage_count", gen_ai_token_type="input") == 4
    assert value("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 28
    assert value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 36
    assert value("gen_ai_client_token_usage_bucket", gen_ai_token_type="output", le="4.0") == 1
    assert value("gen_ai_client_token_usage_bucket", gen_ai_token_type="output", le="16.0") == 4
    # Each bucket holds the streams at or under its bound; the last holds all.
    for bound in TTFT_BUCKETS:
        within = sum(1 for milliseconds in ttft if milliseconds / 1000 <= bound)
        bucket = value("gen_ai_server_time_to_first_token_seconds_bucket", le=str(float(bound)))
        assert bucket == within, bound
    assert value("gen_ai_server_time_to_first_token_seconds_bucket", le="+Inf") == 4
    assert value("llm_stream_cancellations_total") == 0
    assert value("llm_upstream_retries_total", gen_ai_provider_name="openai") == 0


def test_cancellations_by_phase(service_factory: ServiceFactory, upstream: FakeUpstream) -> None:
    running = against(service_factory, upstream, upstream_max_retries=0, send_timeout_seconds=1.0)
    # Before the first token: the upstream has not answered when the client leaves.
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), delay_before_headers=5))
    sock = open_stream(running.host_port, {"prompt": "early"})
    assert upstream.wait_for_exchanges(1)
    sock.close()
    assert running.wait_for_summaries(1)
    # While streaming: one token read, then gone.
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=0.5))
    sock = open_stream(running.host_port, {"prompt": "midway"})
    read_until(sock, b'"type":"delta"', 1)
    sock.close()
    assert running.wait_for_summaries(2)
    # Not reading: far more than the socket buffers hold, and the client reads nothing.
    upstream.queue(Reply(pieces=[chunk_event(content="x" * 2000)] * 50_000))
    sock = open_stream(running.host_port, {"prompt": "frozen"}, receive_buffer=4096)
    try:
        read_until(sock, b'"type":"delta"', 1)
        summaries = running.wait_for_summaries(3, timeout=15)
    finally:
        sock.close()
    assert [summary["outcome"] for summary in summaries] == ["cancelled"] * 3

    metrics = scrape(running.base_url)
    for phase in ("before_first_token", "streaming", "not_reading"):
        assert metrics.value("llm_stream_cancellations_total", phase=phase) == 1, phase
    assert metrics.value("llm_streams_total", outcome="cancelled", **STREAM, **ROUTE) == 3
    assert metrics.value("llm_streams_total", error_type="client_send_timeout") == 1
    # TTFT only for the streams that had a first token.
    assert metrics.value("gen_ai_server_time_to_first_token_seconds_count") == 2
    assert metrics.value("llm_streams_in_flight") == 0


def test_heartbeats_counted_exactly(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = against(service_factory, upstream, upstream_max_retries=0, heartbeat_seconds=0.15)
    upstream.queue(Reply(pieces=answer_pieces(TOKENS[:2]), delay_before_headers=0.8, pause=0.4))
    with httpx.Client(timeout=30) as client:
        response = client.post(running.base_url + "/api/chat/stream", json={"prompt": "hi"})
    assert response.status_code == 200
    sent = response.text.count(": ping")
    assert sent >= 4
    running.wait_for_summaries(1)
    assert scrape(running.base_url).value("llm_stream_heartbeats_total", format="sse") == sent


def test_retries_errors_and_limit_rejections(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = against(service_factory, upstream, upstream_max_retries=1, max_concurrent_streams=1)
    busy = Reply(status=503, headers={"retry-after-ms": "10"}, body=b'{"error":{"message":"x"}}')
    # A retry that succeeds, then one that fails again: two retries, one error.
    upstream.queue(busy, Reply(pieces=answer_pieces(TOKENS[:2])), busy, busy)
    assert stream_chat(running.base_url, {"prompt": "a"})[0].status_code == 200
    assert stream_chat(running.base_url, {"prompt": "b"})[0].status_code == 502
    assert len(upstream.exchanges) == 4
    # The one slot taken by a slow stream: the next request is refused by the limit.
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=0.2))
    sock = open_stream(running.host_port, {"prompt": "slow"})
    try:
        read_until(sock, b'"type":"delta"', 1)
        refused = httpx.post(running.base_url + "/api/chat/stream", json={"prompt": "c"})
        assert refused.status_code == 429
        during = scrape(running.base_url)
    finally:
        sock.close()
    running.wait_for_summaries(3)
    after = scrape(running.base_url)

    assert during.value("llm_streams_in_flight") == 1
    assert after.value("llm_streams_in_flight") == 0
    assert after.value("llm_upstream_retries_total", gen_ai_provider_name="openai") == 2
    assert after.value("llm_stream_limit_rejections_total", limit="per_process") == 1
    assert after.value("llm_stream_limit_rejections_total", limit="per_key") == 0
    assert after.value("llm_streams_total", outcome="error", error_type="upstream_unavailable") == 1
    assert (
        after.value(
            "gen_ai_server_request_duration_seconds_count",
            outcome="error",
            error_type="upstream_unavailable",
        )
        == 1
    )
    assert after.value("llm_streams_total", outcome="completed") == 1


def test_metrics_need_no_key_and_show_no_secret(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = against(service_factory, upstream, service_api_keys="client-key")
    response = httpx.get(running.base_url + "/metrics")
    assert response.status_code == 200
    assert "llm_streams_capacity 200.0" in response.text
    assert TEST_KEY not in response.text
    assert "client-key" not in response.text
    assert httpx.post(running.base_url + "/metrics").status_code == 405


def test_models_listed_in_metrics_models_are_named(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = against(service_factory, upstream, metrics_models="listed-model, another")
    for model in ("listed-model", "unlisted-model", "another"):
        upstream.queue(Reply(pieces=answer_pieces(TOKENS[:1])))
        assert stream_chat(running.base_url, {"prompt": "hi", "model": model})[0].status_code == 200
    running.wait_for_summaries(3)
    metrics = scrape(running.base_url)
    assert metrics.label_values("llm_streams_total", "gen_ai_request_model") == {
        "listed-model",
        "another",
        "other",
    }


def test_every_endpoint_family_is_recorded_with_its_route_and_format(
    service: RunningService, upstream: FakeUpstream
) -> None:
    ui_body = {
        "id": "chat-1",
        "messages": [{"id": "m0", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}],
        "trigger": "submit-message",
    }
    openai_body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    streamed = Reply(pieces=answer_pieces(TOKENS[:2]))  # 7 tokens in, 2 out
    whole = Reply(body=chat_completion_body("Hello there"))  # 5 in, 3 out
    requests = [
        ("/api/chat/stream?format=text", {"prompt": "hi"}, streamed),
        ("/api/chat", ui_body, streamed),
        ("/v1/chat/completions", {**openai_body, "stream": True}, streamed),
        ("/v1/chat/completions", openai_body, whole),
    ]
    for path, body, reply in requests:
        upstream.queue(reply)
        response = httpx.post(service.base_url + path, json=body, timeout=30)
        assert response.status_code == 200, (path, response.text)
    service.wait_for_summaries(len(requests))

    metrics = scrape(service.base_url)
    streams = {
        (route, wire_format): metrics.value("llm_streams_total", route=route, format=wire_format)
        for route in metrics.label_values("llm_streams_total", "route")
        for wire_format in metrics.label_values("llm_streams_total", "format")
    }
    assert {key: count for key, count in streams.items() if count} == {
        ("/api/chat/stream", "text"): 1,
        ("/api/chat", "ui-message-stream"): 1,
        ("/v1/chat/completions", "openai-sse"): 1,
        ("/v1/chat/completions", "openai-json"): 1,
    }
    assert metrics.value("llm_streams_total", outcome="completed") == len(requests)
    assert metrics.value("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 3 * 7 + 5
    assert metrics.value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 3 * 2 + 3


def test_a_resumed_stream_is_counted_once_by_its_producer(
    service_factory: ServiceFactory, upstream: FakeUpstream, redis_server: RedisServer
) -> None:
    running = against(service_factory, upstream, redis_url=redis_server.url)
    upstream.queue(Reply(pieces=answer_pieces(TOKENS), pause=0.1))
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", running.base_url + "/api/chat/stream", json={"prompt": "hi"}) as cut,
    ):
        stream_id = cut.headers["x-stream-id"]
        next(cut.iter_bytes())  # some of it, then the client goes
    resumed = httpx.get(running.base_url + f"/api/chat/stream/{stream_id}", timeout=30)
    assert resumed.text.endswith("data: [DONE]\n\n")
    (summary,) = running.wait_for_summaries(1)
    assert summary["outcome"] == "completed"

    metrics = scrape(running.base_url)
    assert metrics.value("llm_streams_total", outcome="completed", format="sse", **ROUTE) == 1
    assert metrics.value("llm_streams_total") == 1
    assert metrics.value("llm_streams_in_flight") == 0
    assert metrics.value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 11
