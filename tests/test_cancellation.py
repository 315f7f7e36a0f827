"""The client leaving, in every phase, closes the upstream request at once and makes no new one.

The client is a raw socket so the test decides exactly when it closes; the fake upstream records
when its connection was closed. Bounds are generous (a noisy 2-core CI); the expected figure is
a few milliseconds.
"""

from __future__ import annotations

import time

import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event
from testkit.raw_client import open_stream, read_until
from testkit.services import TEST_KEY, RunningService, ServiceFactory


@pytest.fixture(params=["builtin", "httpx2"])
def upstream_http_client(request: pytest.FixtureRequest) -> str:
    """Both SDK transports: each must map failures and close connections the same way."""
    transport: str = request.param
    return transport


CLOSE_BOUND_SECONDS = 1.0
# How long the upstream must have been held back without a break before the client counts as
# stalled (a passing slowness of the service holds it back for a moment only).
STALL_SECONDS = 0.5


def assert_upstream_closed_promptly(upstream: FakeUpstream, closed_at: float) -> None:
    assert upstream.wait_for(lambda: upstream.exchanges[0].disconnected_at is not None)
    disconnected_at = upstream.exchanges[0].disconnected_at
    assert disconnected_at is not None
    assert disconnected_at - closed_at < CLOSE_BOUND_SECONDS
    assert not upstream.exchanges[0].completed


def assert_cancelled(service: RunningService) -> dict[str, object]:
    summaries = service.wait_for_summaries(1)
    assert len(summaries) == 1
    assert summaries[0]["outcome"] == "cancelled"
    return summaries[0]


def test_disconnect_before_upstream_answers(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(delay_before_headers=30, pieces=answer_pieces(["never"])))
    sock = open_stream(service.host_port, {"prompt": "hi"})
    # The request reached the upstream: the service is waiting for its headers.
    assert upstream.wait_for_exchanges(1)
    closed_at = time.monotonic()
    sock.close()
    assert_upstream_closed_promptly(upstream, closed_at)
    assert assert_cancelled(service)["delivered_text_deltas"] == 0


def test_disconnect_during_retry_backoff_makes_no_new_request(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY, openai_base_url=upstream.base_url, upstream_max_retries=3
    )
    # The SDK honours Retry-After: it will sleep 2 s before retrying.
    retry_after = 2.0
    upstream.default_reply = Reply(
        status=503, headers={"retry-after": "2"}, body=b'{"error":{"message":"busy"}}'
    )
    sock = open_stream(running.host_port, {"prompt": "hi"})
    # The whole 503 went out: the SDK is reading it or already waiting to retry.
    assert upstream.wait_for(lambda: upstream.exchanges and upstream.exchanges[0].completed)
    sock.close()
    assert_cancelled(running)
    # A retry would arrive `retry_after` after the 503; watch until well past that.
    retry_due = upstream.exchanges[0].received_at + retry_after
    window = retry_due + 1.0 - time.monotonic()
    assert not upstream.wait_for(lambda: len(upstream.exchanges) > 1, timeout=window)


def test_disconnect_mid_stream(service: RunningService, upstream: FakeUpstream) -> None:
    tokens = [f" t{i}" for i in range(200)]
    upstream.queue(Reply(pieces=answer_pieces(tokens), pause=0.02))
    sock = open_stream(service.host_port, {"prompt": "hi"})
    read_until(sock, b'"type":"delta"', 3)
    closed_at = time.monotonic()
    sock.close()
    assert_upstream_closed_promptly(upstream, closed_at)
    summary = assert_cancelled(service)
    delivered = summary["delivered_text_deltas"]
    assert isinstance(delivered, int)
    assert 3 <= delivered < 200
    assert summary["output_tokens"] == delivered
    assert not upstream.wait_for(lambda: len(upstream.exchanges) > 1, timeout=0.5)


def test_disconnect_while_client_stalled(service: RunningService, upstream: FakeUpstream) -> None:
    # Far more than loopback socket buffers hold (the same bytes object, so no memory cost).
    pieces = [chunk_event(content="x" * 2000)] * 50_000
    upstream.queue(Reply(pieces=pieces))
    sock = open_stream(service.host_port, {"prompt": "hi"}, receive_buffer=4096)
    read_until(sock, b'"type":"delta"', 1)
    # Stop reading: socket buffers fill, the service's send blocks, it stops reading the
    # upstream, and so the upstream's writes are held back, without a break.
    exchange = upstream.exchanges[0]
    assert upstream.wait_for(lambda: exchange.held_back_seconds() > STALL_SECONDS, timeout=20)
    assert not exchange.completed
    closed_at = time.monotonic()
    sock.close()
    assert_upstream_closed_promptly(upstream, closed_at)
    assert_cancelled(service)
