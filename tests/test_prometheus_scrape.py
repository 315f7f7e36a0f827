"""A real Prometheus scrapes the service with the repository's example configuration; its
quantiles agree with the streams' own figures, and every dashboard query and alert rule of
`deploy/` evaluates there (issue #10)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.prometheus_metrics import OVERHEAD_BUCKETS, TTFT_BUCKETS
from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.prometheus import DEPLOY, PrometheusServer, finite_values
from testkit.raw_client import open_stream, read_until
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import stream_chat

JOB = "llm-stream-service"  # the example configuration's job
DASHBOARD = DEPLOY / "grafana" / "llm-stream-service.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
FIRST_TOKEN_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.6)
HELD = 3  # streams held open: MAX_CONCURRENT_STREAMS, so the next one is refused


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], PrometheusServer]]:
    """`start(target)`: Prometheus scraping `target`; stopped at the end of the test."""
    started: list[PrometheusServer] = []

    def start(target: str) -> PrometheusServer:
        started.append(PrometheusServer.start(target, tmp_path))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def traffic(service: RunningService, upstream: FakeUpstream) -> list[dict[str, Any]]:
    """One of each kind of stream: completed (with heartbeats before the slower first tokens),
    an error after an upstream retry, cancellations while streaming, a 429 from the limit.
    Returns the `end` events' metrics of the completed streams."""
    ends = []
    for delay in FIRST_TOKEN_DELAYS:
        # Paced: tokens that arrive in one read share its time, and give no decode rate.
        tokens = answer_pieces([" a", " b", " c"])
        upstream.queue(Reply(pieces=tokens, delay_before_headers=delay, pause=0.01))
        response, events = stream_chat(service.base_url, {"prompt": "hi"})
        assert response.status_code == 200
        ends.append(events[-2].json()["metrics"])
    busy = Reply(status=503, headers={"retry-after-ms": "10"}, body=b'{"error":{"message":"x"}}')
    upstream.queue(busy, busy)
    assert stream_chat(service.base_url, {"prompt": "hi"})[0].status_code == 502
    upstream.queue(*[Reply(pieces=answer_pieces([" slow"] * 50), pause=0.2)] * HELD)
    held = [open_stream(service.host_port, {"prompt": "hold"}) for _ in range(HELD)]
    try:
        for sock in held:
            read_until(sock, b'"type":"delta"', 1)
        refused = httpx.post(service.base_url + "/api/chat/stream", json={"prompt": "more"})
        assert refused.status_code == 429
    finally:
        for sock in held:
            sock.close()
    return ends


def prometheus_quantile(quantile: float, bounds: tuple[float, ...], values: list[float]) -> float:
    """What `histogram_quantile` computes from classic buckets holding `values` (Prometheus's
    `bucketQuantile`: linear interpolation inside the bucket where the rank falls)."""
    cumulative = [sum(1 for v in values if v <= bound) for bound in bounds]
    rank = quantile * len(values)
    index = next((i for i, count in enumerate(cumulative) if count >= rank), len(bounds))
    if index == len(bounds):  # in the +Inf bucket: the highest finite bound
        return bounds[-1]
    start = bounds[index - 1] if index else 0.0
    below = cumulative[index - 1] if index else 0
    return start + (bounds[index] - start) * (rank - below) / (cumulative[index] - below)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def dashboard_variables() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def as_grafana_would(expr: str) -> str:
    """The query Grafana sends with this job chosen, every route and model, a 1m rate window."""
    for variable, value in (("$__rate_interval", "1m"), ("$job", JOB), ("$route", ".*")):
        expr = expr.replace(variable, value)
    return expr.replace("$model", ".*")


def test_real_prometheus_scrapes_dashboards_and_alerts_evaluate(
    service_factory: ServiceFactory,
    upstream: FakeUpstream,
    prometheus: Callable[[str], PrometheusServer],
) -> None:
    service = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=1,
        max_concurrent_streams=HELD,
        heartbeat_seconds=0.15,
    )
    host, port = service.host_port
    server = prometheus(f"{host}:{port}")

    # Two rounds: rates need a series to grow between two scrapes.
    ends = traffic(service, upstream)
    server.wait_for_scrape(after=time.time())
    ends += traffic(service, upstream)
    summaries = service.wait_for_summaries(2 * (len(FIRST_TOKEN_DELAYS) + 1 + HELD))
    server.wait_for_scrape(after=time.time())

    assert server.value(f'up{{job="{JOB}"}}') == 1
    # The quantiles Prometheus computes are the ones the streams' own figures give.
    first_token = [s for s in summaries if s["ttft_ms"] is not None]
    assert [end["ttft_ms"] for end in ends] == [
        s["ttft_ms"] for s in first_token if s["outcome"] == "completed"
    ]
    ttft = [s["ttft_ms"] / 1000 for s in first_token]
    overhead = [(s["ttft_ms"] - s["upstream_ttft_ms"]) / 1000 for s in first_token]
    for metric, bounds, values in (
        ("gen_ai_server_time_to_first_token_seconds", TTFT_BUCKETS, ttft),
        ("llm_stream_overhead_seconds", OVERHEAD_BUCKETS, overhead),
    ):
        p99 = server.value(f"histogram_quantile(0.99, sum by (le) ({metric}_bucket))")
        assert p99 == pytest.approx(prometheus_quantile(0.99, bounds, values), rel=1e-6), metric
    assert server.value("sum(llm_streams_total)") == len(summaries)

    # Every dashboard query, as Grafana would send it, returns numbers.
    queries = dashboard_queries()
    assert len(queries) >= 15
    for expr in queries:
        assert finite_values(server.query(as_grafana_would(expr))), expr
    for variable in dashboard_variables():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", as_grafana_would(variable))
        assert match, variable
        assert server.api(f"label/{match[2]}/values", **{"match[]": match[1]}), variable

    # Every alert rule is loaded and evaluates without error (none fires on this traffic).
    rules = [r for group in server.api("rules")["groups"] for r in group["rules"]]
    expected = [
        r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    ]
    assert sorted(r["name"] for r in rules) == sorted(expected)
    for rule in rules:
        assert rule["health"] == "ok", rule
        server.query(rule["query"])  # also accepted as an instant query
