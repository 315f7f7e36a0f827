"""Graceful shutdown: on SIGTERM open streams finish within the grace period, the rest end
in-band with a retryable `server_shutting_down` error and [DONE], and the process exits."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.ports import port_of, wait_until_refusing
from testkit.service_process import start_service_process, stream_outcomes
from testkit.services import TEST_KEY, RunningService
from testkit.sse_client import SSEEvent, iter_events

GRACE_SECONDS = 2.0


def consume(base_url: str, prompt: str, streaming: threading.Event) -> list[SSEEvent]:
    """The whole answer to `prompt`; `streaming` is set once its first event has arrived."""
    events: list[SSEEvent] = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", base_url + "/api/chat/stream", json={"prompt": prompt}) as response,
    ):
        assert response.status_code == 200
        for event in iter_events(response):
            events.append(event)
            streaming.set()
    return events


def test_sigterm_finishes_short_streams_and_ends_long_ones_in_band(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    short = Reply(pieces=answer_pieces([" s"] * 8), pause=0.1)  # ~1 s: within the grace
    long = Reply(pieces=answer_pieces([" l"] * 200), pause=0.1)  # ~20 s: cut by shutdown
    process, base_url = start_service_process(
        tmp_path,
        OPENAI_API_KEY=TEST_KEY,
        OPENAI_BASE_URL=upstream.base_url,
        SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
        UPSTREAM_MAX_RETRIES="0",
    )
    try:
        prompts = [f"short-{i}" for i in range(4)] + [f"long-{i}" for i in range(8)]
        replies = {"short": short, "long": long}
        streaming = {prompt: threading.Event() for prompt in prompts}
        with ThreadPoolExecutor(len(prompts)) as pool:
            futures = {}
            for prompt in prompts:
                # Queue the reply for this request, then wait until it reached the upstream,
                # so each prompt gets its own reply.
                upstream.queue(replies[prompt.split("-")[0]])
                futures[prompt] = pool.submit(consume, base_url, prompt, streaming[prompt])
                assert upstream.wait_for_exchanges(len(futures))
            # Every answer is under way when the signal comes.
            assert all(started.wait(10) for started in streaming.values())
            signalled_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert wait_until_refusing(port_of(base_url), timeout=5)
            with pytest.raises(httpx.TransportError):  # no new connections are accepted
                httpx.post(base_url + "/api/chat/stream", json={"prompt": "late"}, timeout=2)
            results = {prompt: future.result(timeout=30) for prompt, future in futures.items()}
        process.wait(timeout=GRACE_SECONDS + 8)
        exited_after = time.monotonic() - signalled_at
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=10)

    assert exited_after < GRACE_SECONDS + 6
    for prompt, events in results.items():
        assert events[-1].data == "[DONE]", prompt  # never truncated
        final = events[-2].json()
        if prompt.startswith("short"):
            assert final["type"] == "end"
            assert final["finish_reason"] == "stop"
        else:
            assert final["type"] == "error"
            assert final["error"]["type"] == "server_shutting_down"
            assert final["error"]["retryable"] is True
    long_exchanges = [e for e in upstream.exchanges if b"long" in e.body]
    assert len(long_exchanges) == 8
    # The fake upstream's thread records each close a moment after the service made it.
    assert upstream.wait_for(lambda: all(e.disconnected_at is not None for e in long_exchanges))
    assert not any(e.completed for e in long_exchanges)
    assert len(upstream.exchanges) == len(prompts)
    outcomes = stream_outcomes(stderr)
    assert (
        sorted(outcomes, key=str)
        == [("completed", None)] * 4 + [("error", "server_shutting_down")] * 8
    )
    assert "Traceback" not in stderr


def test_draining_refuses_new_streams_and_fails_readiness(service: RunningService) -> None:
    assert httpx.get(service.base_url + "/readyz").status_code == 200
    service.begin_shutdown()
    readiness = httpx.get(service.base_url + "/readyz")
    assert readiness.status_code == 503
    assert readiness.json() == {"status": "draining"}
    assert httpx.get(service.base_url + "/healthz").status_code == 200
    refused = httpx.post(service.base_url + "/api/chat/stream", json={"prompt": "hi"})
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "server_shutting_down"
    assert os.environ.get("OPENAI_API_KEY") is None  # the test ran with a clean environment
