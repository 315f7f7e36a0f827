"""Several upstream deployments (`UPSTREAMS`, issue #17), against real servers on loopback ports:
fake upstreams that refuse connections, answer 429 with `Retry-After`, hang before their head,
fail mid-stream, or answer; the service in a real uvicorn, with the real SDK in between.

What a client sees is the healthy deployment's exact answer, or, once content has gone out, the
failure in-band as with one upstream; what the failing deployments see is counted request by
request (none during their cooldown); and a client that leaves while the router is between
deployments makes no further upstream request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from testkit.fake_upstream import (
    FakeUpstream,
    Reply,
    answer_pieces,
    chunk_event,
    error_body,
)
from testkit.metrics_reader import Scrape, scrape
from testkit.openai_fakes import responses_pieces
from testkit.otlp_collector import OTLPCollector
from testkit.ports import free_port
from testkit.raw_client import open_stream
from testkit.redis_server import RedisServer
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import answer_text, read_events, stream_chat
from testkit.waiting import wait_until
from tests.test_ui_chat import chat, ui_body

pytestmark = pytest.mark.server

TOKENS = [" Hello", ",", " world", "!"]
ANSWER = "".join(TOKENS)
BUSY = error_body("Rate limit reached", "rate_limit_error")
# Long enough that no cooldown ends during a test that does not wait for one.
LONG_COOLDOWN = 60.0

Fakes = Callable[[int], list[FakeUpstream]]


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    """`fakes(n)`: n more fake upstreams on loopback ports, all stopped at the end."""
    started: list[FakeUpstream] = []

    def start(count: int) -> list[FakeUpstream]:
        more = [FakeUpstream() for _ in range(count)]
        for fake in more:
            fake.start()
        started.extend(more)
        return more

    yield start
    for fake in started:
        fake.stop()


def entry(name: str, fake: FakeUpstream | None = None, **fields: Any) -> dict[str, Any]:
    """A deployment on `fake` (without one: a port where nothing listens)."""
    base = fake.base_url if fake is not None else f"http://127.0.0.1:{free_port()}"
    return {"name": name, "base_url": base + "/v1", "api_key": TEST_KEY, **fields}


def routed(
    service_factory: ServiceFactory, *entries: dict[str, Any], **settings: Any
) -> RunningService:
    settings.setdefault("upstream_cooldown_seconds", LONG_COOLDOWN)
    return service_factory(upstreams=json.dumps(list(entries)), **settings)


def answering(fake: FakeUpstream, tokens: list[str] = TOKENS) -> FakeUpstream:
    fake.default_reply = Reply(pieces=answer_pieces(tokens))
    return fake


def requests_to(metrics: Scrape, deployment: str) -> float:
    return metrics.value("llm_upstream_requests_total", deployment=deployment)


def state_of(metrics: Scrape, deployment: str) -> str | None:
    """The deployment's state in `/metrics`; None while a change is half written (the scrape
    runs in a thread while the loop sets one gauge per state)."""
    states = [
        state
        for state in ("healthy", "cooling_down", "broken", "probe", "probing")
        if metrics.value("llm_upstream_deployment_state", deployment=deployment, state=state)
    ]
    return states[0] if len(states) == 1 else None


def test_failover_before_the_first_token_reaches_the_healthy_deployment(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    limited, hanging, healthy = fakes(3)
    limited.default_reply = Reply(status=429, headers={"retry-after": "30"}, body=BUSY)
    hanging.default_reply = Reply(delay_before_headers=30, pieces=answer_pieces(["never"]))
    answering(healthy)
    running = routed(
        service_factory,
        entry("refusing"),
        entry("limited", limited),
        entry("hanging", hanging),
        entry("healthy", healthy),
        failover_timeout_seconds=0.5,
    )
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == ANSWER
    start = events[0].json()
    assert (start["type"], start["deployment"]) == ("start", "healthy")
    assert [event.event for event in events].count("start") == 1
    assert [len(fake.exchanges) for fake in (limited, hanging, healthy)] == [1, 1, 1]
    # The hanging deployment's request was closed when the router moved on.
    assert hanging.wait_for(lambda: hanging.exchanges[0].disconnected_at is not None)

    # Cooling down, the three failing ones are asked nothing more.
    for _ in range(5):
        response, events = stream_chat(running.base_url, {"prompt": "hi"})
        assert answer_text(events) == ANSWER
    assert [len(fake.exchanges) for fake in (limited, hanging, healthy)] == [1, 1, 6]

    metrics = scrape(running.base_url)
    assert [requests_to(metrics, name) for name in ("refusing", "limited", "hanging")] == [1] * 3
    assert requests_to(metrics, "healthy") == 6
    for name, reason in (("refusing", "connection"), ("limited", "rate_limited")):
        assert metrics.value("llm_upstream_failovers_total", deployment=name, reason=reason) == 1
    assert metrics.value("llm_upstream_failovers_total", deployment="hanging", reason="timeout")
    assert metrics.value("llm_upstream_failovers_total", deployment="healthy") == 0
    assert [state_of(metrics, name) for name in ("refusing", "limited", "hanging")] == [
        "cooling_down"
    ] * 3
    assert state_of(metrics, "healthy") == "healthy"
    assert metrics.value("llm_upstream_in_flight") == 0
    summaries = running.wait_for_summaries(6)
    assert {(s["deployment"], s["provider"], s["outcome"]) for s in summaries} == {
        ("healthy", "openai", "completed")
    }


def failovers_from(metrics: Scrape, deployment: str, reason: str) -> tuple[float, float]:
    """The deployment's failovers for `reason`, and for every reason."""
    name = "llm_upstream_failovers_total"
    return metrics.value(name, deployment=deployment, reason=reason), metrics.value(
        name, deployment=deployment
    )


def check_one_failover(
    running: RunningService, failing: FakeUpstream, healthy: FakeUpstream, reason: str
) -> None:
    """One request gets the `healthy` deployment's exact answer, after `failing` (the first
    deployment) was asked once and left: one failover in `/metrics`, under `reason` only, and
    `failing` cooling down."""
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert answer_text(events) == ANSWER
    assert events[0].json()["deployment"] == "healthy"
    assert [len(failing.exchanges), len(healthy.exchanges)] == [1, 1]
    metrics = scrape(running.base_url)
    assert failovers_from(metrics, "failing", reason) == (1, 1)
    assert metrics.value("llm_upstream_failovers_total", deployment="healthy") == 0
    assert state_of(metrics, "failing") == "cooling_down"


def test_a_head_then_silence_fails_over_on_the_failover_timeout(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    silent, healthy = fakes(2)
    # The response head at once, then not one byte of the body, and the connection kept open.
    silent.default_reply = Reply(hang=True)
    answering(healthy)
    running = routed(
        service_factory,
        entry("failing", silent),
        entry("healthy", healthy),
        failover_timeout_seconds=0.5,
    )
    check_one_failover(running, silent, healthy, "timeout")
    # The silent deployment's request was closed when the router moved on.
    assert silent.wait_for(lambda: silent.exchanges[0].disconnected_at is not None)


def test_a_redirect_fails_over_and_is_never_followed(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    redirecting, target, healthy = fakes(3)
    redirecting.default_reply = Reply(
        status=307, headers={"location": target.base_url + "/v1/chat/completions"}, body=b""
    )
    answering(target, [" followed"])
    answering(healthy)
    running = routed(service_factory, entry("failing", redirecting), entry("healthy", healthy))
    check_one_failover(running, redirecting, healthy, "redirect")
    assert not target.exchanges  # the key is never sent where a redirect points


def test_a_failure_with_no_deployment_left_is_not_a_failover(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    failing, limited = fakes(2)
    failing.default_reply = Reply(status=503, body=error_body("overloaded", "server_error"))
    limited.default_reply = Reply(status=429, headers={"retry-after": "30"}, body=BUSY)
    running = routed(service_factory, entry("failing", failing), entry("limited", limited))
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 429  # the last deployment's own answer
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})  # both cooling down
    assert response.status_code == 502
    assert [len(failing.exchanges), len(limited.exchanges)] == [1, 1]
    metrics = scrape(running.base_url)
    # `failing` -> `limited` was a move; `limited` had no one to move to.
    assert failovers_from(metrics, "failing", "server_error") == (1, 1)
    assert metrics.value("llm_upstream_failovers_total", deployment="limited") == 0
    assert state_of(metrics, "limited") == "cooling_down"  # its failure still counts there


def test_a_mid_stream_failure_is_in_band_never_a_switch(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    cut, healthy = fakes(2)
    # A first token, then the body ends without a finish: the stream had started.
    cut.default_reply = Reply(
        pieces=[chunk_event(role="assistant", content=""), chunk_event(content="Half")]
    )
    answering(healthy, [" never", " sent"])
    running = routed(service_factory, entry("cut", cut), entry("healthy", healthy))
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert events[0].json()["deployment"] == "cut"
    assert answer_text(events) == "Half"  # no duplicate, no splice
    assert events[-2].event == "error"
    assert events[-2].json()["error"]["type"] == "upstream_unavailable"
    (summary,) = running.wait_for_summaries(1)
    assert (summary["deployment"], summary["outcome"]) == ("cut", "error")
    assert not healthy.wait_for(lambda: healthy.exchanges, timeout=0.5)
    metrics = scrape(running.base_url)
    assert metrics.value("llm_upstream_failovers_total") == 0
    assert state_of(metrics, "cut") == "healthy"  # a stream's own failure is not looked at


def test_a_request_the_deployment_refuses_is_answered_not_retried_elsewhere(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    refusing, healthy = fakes(2)
    reason = "This model's maximum context length is 128000 tokens."
    refusing.default_reply = Reply(
        status=400,
        body=error_body(reason, "invalid_request_error", "context_length_exceeded"),
    )
    answering(healthy)
    running = routed(service_factory, entry("first", refusing), entry("second", healthy))
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 400
    assert reason in response.json()["error"]["message"]
    assert not healthy.wait_for(lambda: healthy.exchanges, timeout=0.5)
    (summary,) = running.wait_for_summaries(1)
    assert summary["deployment"] == "first"
    assert state_of(scrape(running.base_url), "first") == "healthy"


def test_a_refused_key_marks_the_deployment_broken(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    wrong_key, healthy = fakes(2)
    wrong_key.default_reply = Reply(
        status=401,
        body=error_body(f"Incorrect API key provided: {TEST_KEY}.", "invalid_request_error"),
    )
    answering(healthy)
    running = routed(service_factory, entry("wrong-key", wrong_key), entry("healthy", healthy))
    for _ in range(3):
        _response, events = stream_chat(running.base_url, {"prompt": "hi"})
        assert answer_text(events) == ANSWER
        assert not [event for event in events if TEST_KEY in event.data]
    assert len(wrong_key.exchanges) == 1
    metrics = scrape(running.base_url)
    assert state_of(metrics, "wrong-key") == "broken"
    assert metrics.value("llm_upstream_failovers_total", deployment="wrong-key", reason="auth")


def test_every_deployment_rate_limited_is_a_429_with_the_soonest_retry_after(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    first, second = fakes(2)
    first.default_reply = Reply(status=429, headers={"retry-after": "40"}, body=BUSY)
    second.default_reply = Reply(status=429, headers={"retry-after": "20"}, body=BUSY)
    running = routed(
        service_factory, entry("a", first), entry("b", second), upstream_cooldown_seconds=1
    )
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 429  # the last deployment's own answer
    assert [len(first.exchanges), len(second.exchanges)] == [1, 1]
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})  # both cooling down
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limited"
    assert 20 <= int(response.headers["retry-after"]) <= 23
    assert [len(first.exchanges), len(second.exchanges)] == [1, 1]


def test_a_5xx_retry_after_sets_the_cooldown_as_a_429s_does(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    (overloaded,) = fakes(1)
    overloaded.default_reply = Reply(
        status=503, headers={"retry-after": "120"}, body=error_body("overloaded", "server_error")
    )
    running = routed(
        service_factory, entry("overloaded", overloaded, max_retries=0), upstream_cooldown_seconds=1
    )
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 502  # the deployment's own failure, as with one upstream:
    assert "retry-after" not in response.headers  # its Retry-After is for the cooldown only
    assert state_of(scrape(running.base_url), "overloaded") == "cooling_down"
    # Cooling down for its 120 s (plus jitter), not the 1 s of UPSTREAM_COOLDOWN_SECONDS: the
    # router's own 502 says when it comes back, and the deployment is asked nothing more.
    response, _ = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_unavailable"
    assert 119 <= int(response.headers["retry-after"]) <= 133
    assert len(overloaded.exchanges) == 1


def test_when_a_cooldown_ends_one_request_probes_the_deployment(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    flaky, steady = fakes(2)
    flaky.queue(Reply(status=503, body=error_body("overloaded", "server_error")))
    answering(flaky, [" recovered"])
    answering(steady)
    running = routed(
        service_factory,
        entry("flaky", flaky),
        entry("steady", steady),
        upstream_cooldown_seconds=0.5,
    )
    _, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert answer_text(events) == ANSWER
    assert wait_until(
        lambda: state_of(scrape(running.base_url), "flaky") in ("cooling_down", "probe")
    )
    assert wait_until(lambda: state_of(scrape(running.base_url), "flaky") == "probe")
    _, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert answer_text(events) == " recovered"  # the probe went to it, and it answered
    assert len(flaky.exchanges) == 2
    assert state_of(scrape(running.base_url), "flaky") == "healthy"


def test_weights_spread_requests_over_healthy_deployments(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    heavy, light = (answering(fake) for fake in fakes(2))
    running = routed(
        service_factory, entry("heavy", heavy, weight=3), entry("light", light, weight=1)
    )
    for _ in range(20):
        _, events = stream_chat(running.base_url, {"prompt": "hi"})
        assert answer_text(events) == ANSWER
    counts = len(heavy.exchanges), len(light.exchanges)
    assert sum(counts) == 20
    assert 12 <= counts[0] <= 18, counts  # 15 by weight; neither all on one nor half and half


def test_a_busy_deployment_gets_the_next_requests_less(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    busy, idle = fakes(2)
    busy.queue(Reply(pieces=[chunk_event(content="slow")], hang=True))
    answering(busy)
    answering(idle)
    running = routed(service_factory, entry("busy", busy), entry("idle", idle))
    held = open_stream(running.host_port, {"prompt": "hold"})  # to `busy`: the first choice
    try:
        assert busy.wait_for_exchanges(1)
        assert wait_until(
            lambda: scrape(running.base_url).value("llm_upstream_in_flight", deployment="busy") == 1
        )
        for _ in range(4):
            _, events = stream_chat(running.base_url, {"prompt": "hi"})
            assert answer_text(events) == ANSWER
        assert (len(busy.exchanges), len(idle.exchanges)) == (1, 4)
    finally:
        held.close()
    assert wait_until(lambda: scrape(running.base_url).value("llm_upstream_in_flight") == 0)


def test_max_concurrent_is_respected(service_factory: ServiceFactory, fakes: Fakes) -> None:
    (slow,) = fakes(1)
    slow.default_reply = Reply(pieces=[chunk_event(content="slow")], hang=True)
    running = routed(service_factory, entry("only", slow, max_concurrent=1))
    held = open_stream(running.host_port, {"prompt": "hold"})
    try:
        assert slow.wait_for_exchanges(1)
        response, _ = stream_chat(running.base_url, {"prompt": "hi"})
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "too_many_streams"
        assert "max_concurrent" in response.json()["error"]["message"]
        assert len(slow.exchanges) == 1
    finally:
        held.close()


def test_a_client_that_leaves_between_deployments_makes_no_further_request(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    hanging, healthy = fakes(2)
    hanging.default_reply = Reply(delay_before_headers=30, pieces=answer_pieces(["never"]))
    answering(healthy)
    running = routed(
        service_factory,
        entry("hanging", hanging),
        entry("healthy", healthy),
        failover_timeout_seconds=1.0,
    )
    sock = open_stream(running.host_port, {"prompt": "hi"})
    assert hanging.wait_for_exchanges(1)
    left_at = time.monotonic()
    sock.close()
    assert hanging.wait_for(lambda: hanging.exchanges[0].disconnected_at is not None)
    disconnected_at = hanging.exchanges[0].disconnected_at
    assert disconnected_at is not None
    assert disconnected_at - left_at < 1.0
    (summary,) = running.wait_for_summaries(1)
    assert summary["outcome"] == "cancelled"
    # The failover would have asked `healthy` one second after the request began.
    assert not healthy.wait_for(lambda: healthy.exchanges, timeout=2.0)
    metrics = scrape(running.base_url)
    assert metrics.value("llm_upstream_in_flight") == 0
    assert state_of(metrics, "hanging") == "healthy"  # leaving is no verdict on it


def test_a_client_that_leaves_during_a_deployments_retry_backoff_makes_no_request(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    busy, healthy = fakes(2)
    busy.default_reply = Reply(status=503, headers={"retry-after": "2"}, body=BUSY)
    answering(healthy)
    # This deployment asks for the SDK's retries: it sleeps 2 s before its next try.
    running = routed(service_factory, entry("busy", busy, max_retries=3), entry("healthy", healthy))
    sock = open_stream(running.host_port, {"prompt": "hi"})
    assert busy.wait_for(lambda: busy.exchanges and busy.exchanges[0].completed)
    sock.close()
    (summary,) = running.wait_for_summaries(1)
    assert summary["outcome"] == "cancelled"
    window = busy.exchanges[0].received_at + 2.0 + 1.0 - time.monotonic()
    assert not wait_until(lambda: len(busy.exchanges) > 1 or healthy.exchanges, timeout=window)


def test_azure_deployments_get_their_own_model_names_and_versions(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    east, west = fakes(2)
    east.default_reply = Reply(status=503, body=error_body("busy", "server_error"))
    answering(west)
    azure = {"provider": "azure", "api_key": TEST_KEY}
    running = routed(
        service_factory,
        {**azure, "name": "eastus", "base_url": east.base_url, "models": {"gpt-4o": "gpt-4o-e"}},
        {
            **azure,
            "name": "westeurope",
            "base_url": west.base_url,
            "api_version": "2025-03-01-preview",
            "models": {"gpt-4o": "gpt-4o-w"},
        },
        default_model="gpt-4o",
    )
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert answer_text(events) == ANSWER
    start = events[0].json()
    assert (start["model"], start["deployment"]) == ("gpt-4o", "westeurope")
    assert east.exchanges[0].path == (
        "/openai/deployments/gpt-4o-e/chat/completions?api-version=2024-10-21"
    )
    sent = west.exchanges[0]
    assert (
        sent.path == "/openai/deployments/gpt-4o-w/chat/completions?api-version=2025-03-01-preview"
    )
    assert sent.json()["model"] == "gpt-4o-w"
    assert sent.headers["api-key"] == TEST_KEY
    (summary,) = running.wait_for_summaries(1)
    assert (summary["provider"], summary["model"]) == ("azure", "gpt-4o")
    metrics = scrape(running.base_url)
    assert metrics.value("llm_streams_total", gen_ai_provider_name="azure.ai.openai") == 1
    # A model no deployment lists is refused without asking any.
    response, _ = stream_chat(running.base_url, {"prompt": "hi", "model": "gpt-3.5"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "model_not_found"
    assert (len(east.exchanges), len(west.exchanges)) == (1, 1)


def test_every_endpoint_is_routed(service_factory: ServiceFactory, fakes: Fakes) -> None:
    (healthy,) = fakes(1)
    running = routed(service_factory, entry("down"), entry("up", healthy))
    healthy.queue(Reply(pieces=answer_pieces(TOKENS)))
    response, chunks = chat(running, ui_body("hi"))  # the AI SDK's useChat
    assert response.status_code == 200
    assert chunks[0] == {
        "type": "start",
        "messageId": chunks[0]["messageId"],
        "messageMetadata": {"deployment": "up"},
    }
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == ANSWER
    healthy.queue(Reply(pieces=answer_pieces(TOKENS)))
    with httpx.stream(
        "GET", running.base_url + "/api/chat/stream", params={"message": "hi"}, timeout=30
    ) as got:
        assert answer_text(read_events(got)) == ANSWER
    summaries = running.wait_for_summaries(2)
    assert [s["deployment"] for s in summaries] == ["up", "up"]
    assert [s["endpoint"] for s in summaries] == ["/api/chat", "/api/chat/stream"]


def test_the_openai_sdk_sees_no_difference(
    service_factory: ServiceFactory, upstream: FakeUpstream, fakes: Fakes
) -> None:
    """The same upstream answers through one upstream and through the router (after a dead
    deployment): the SDK's chunks, answers and Responses events are the same."""
    plain = service_factory(
        openai_api_key=TEST_KEY, openai_base_url=upstream.base_url + "/v1", upstream_max_retries=0
    )
    router = routed(service_factory, entry("dead"), entry("live", upstream))

    def seen(service: RunningService) -> list[Any]:
        client = openai.OpenAI(base_url=service.base_url + "/v1", api_key="k", max_retries=0)
        messages: list[Any] = [{"role": "user", "content": "hi"}]
        upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
        chunks = [
            chunk.model_dump()
            for chunk in client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True
            )
        ]
        upstream.queue(Reply(pieces=responses_pieces(TOKENS)))
        events = [
            event.model_dump()
            for event in client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        ]
        models = [model.id for model in client.models.list()]  # the default reply
        return [chunks, events, models]

    upstream.default_reply = Reply(
        status=200,
        body=json.dumps(
            {
                "object": "list",
                "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "x"}],
            }
        ).encode(),
    )
    through_one, through_router = seen(plain), seen(router)
    assert through_router == through_one
    assert (
        "".join(
            c["choices"][0]["delta"]["content"] or "" for c in through_router[0] if c["choices"]
        )
        == ANSWER
    )

    # A mid-stream failure is the SDK's APIError, as with one upstream.
    upstream.queue(Reply(pieces=[chunk_event(content="Half")]))
    client = openai.OpenAI(base_url=router.base_url + "/v1", api_key="k", max_retries=0)
    received: list[Any] = []
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError) as raised:
        received.extend(stream)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "Half"
    assert raised.value.code == "upstream_unavailable"


def test_models_are_the_union_of_the_deployments(
    service_factory: ServiceFactory, fakes: Fakes
) -> None:
    listing, also_listing = fakes(2)
    for fake, models in ((listing, ["llama3", "shared"]), (also_listing, ["shared", "qwen"])):
        data = [{"id": m, "object": "model", "created": 1, "owned_by": "local"} for m in models]
        fake.default_reply = Reply(body=json.dumps({"object": "list", "data": data}).encode())
    running = routed(
        service_factory,
        entry("azure-like", None, models={"gpt-4o": "gpt-4o-east"}),  # listed: asked of no one
        entry("local", listing),
        entry("down"),  # lists nothing, and is left out
        entry("other", also_listing),
    )
    response = httpx.get(running.base_url + "/v1/models", timeout=30)
    assert response.status_code == 200
    assert [model["id"] for model in response.json()["data"]] == [
        "gpt-4o",
        "llama3",
        "shared",
        "qwen",
    ]
    one = httpx.get(running.base_url + "/v1/models/qwen", timeout=30)
    assert one.json()["id"] == "qwen"
    assert [e.path for e in listing.exchanges][:1] == ["/v1/models"]


def replicas(
    service_factory: ServiceFactory,
    redis: RedisServer,
    count: int,
    *entries: dict[str, Any],
    **settings: Any,
) -> list[RunningService]:
    return [
        routed(service_factory, *entries, redis_url=redis.url, **settings) for _ in range(count)
    ]


def test_replicas_sharing_redis_share_cooldowns(
    redis_server: RedisServer, service_factory: ServiceFactory, fakes: Fakes
) -> None:
    limited, healthy = fakes(2)
    limited.default_reply = Reply(status=429, headers={"retry-after": "30"}, body=BUSY)
    answering(healthy)
    entries = (entry("limited", limited), entry("healthy", healthy))
    first, second = replicas(service_factory, redis_server, 2, *entries)
    _, events = stream_chat(first.base_url, {"prompt": "hi"})
    assert answer_text(events) == ANSWER
    # What the first replica learnt, the second knows without asking `limited` itself.
    assert wait_until(lambda: state_of(scrape(second.base_url), "limited") == "cooling_down")
    for _ in range(3):
        _, events = stream_chat(second.base_url, {"prompt": "hi"})
        assert answer_text(events) == ANSWER
    # A replica that starts later reads it from Redis.
    (third,) = replicas(service_factory, redis_server, 1, *entries)
    assert wait_until(lambda: state_of(scrape(third.base_url), "limited") == "cooling_down")
    _, events = stream_chat(third.base_url, {"prompt": "hi"})
    assert answer_text(events) == ANSWER
    assert len(limited.exchanges) == 1
    assert len(healthy.exchanges) == 5


def test_replicas_sharing_redis_hear_that_a_probe_was_answered(
    redis_server: RedisServer, service_factory: ServiceFactory, fakes: Fakes
) -> None:
    flaky, healthy = fakes(2)
    flaky.queue(Reply(status=503, body=BUSY))
    answering(flaky, [" back"])
    answering(healthy)
    entries = (entry("flaky", flaky), entry("healthy", healthy))
    first, second = replicas(
        service_factory, redis_server, 2, *entries, upstream_cooldown_seconds=0.5
    )
    _, events = stream_chat(first.base_url, {"prompt": "hi"})
    assert answer_text(events) == ANSWER
    assert wait_until(
        lambda: state_of(scrape(second.base_url), "flaky") in ("cooling_down", "probe")
    )
    assert wait_until(lambda: state_of(scrape(first.base_url), "flaky") == "probe")
    _, events = stream_chat(first.base_url, {"prompt": "hi"})
    assert answer_text(events) == " back"
    assert wait_until(lambda: state_of(scrape(second.base_url), "flaky") == "healthy")
    assert len(flaky.exchanges) == 2  # the failure, and the first replica's probe


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPCollector]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
    running = OTLPCollector()
    running.start()
    yield running
    running.stop()


def test_the_span_names_the_deployment_that_answered(
    service_factory: ServiceFactory, fakes: Fakes, collector: OTLPCollector
) -> None:
    (live,) = fakes(1)
    answering(live)
    running = routed(
        service_factory,
        entry("dead", None, provider="openai"),
        entry("live", live),
        otel_exporter_otlp_endpoint=collector.endpoint,
    )
    _, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert answer_text(events) == ANSWER
    (span,) = collector.wait_for_spans(1)
    assert span.attributes["llm_stream.deployment"] == "live"
    assert span.attributes["gen_ai.provider.name"] == "openai"
