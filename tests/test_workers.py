"""`python -m service` with WORKERS=2: `/metrics` sums both workers exactly, each worker drains
on SIGTERM, and a worker that dies stops counting in the gauges (issue #10).

Which worker serves a connection is the kernel's choice, so the tests read each worker's own
share from the files prometheus-client's multiprocess mode writes (one per worker process, read
with the library's `MultiProcessCollector.merge`), and send more streams until both have some.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, first_token_then_silence
from testkit.metrics_reader import scrape
from testkit.ports import port_of, wait_until_refusing
from testkit.service_process import start_service_process, stop_process
from testkit.services import TEST_KEY
from testkit.sse_client import SSEEvent, read_events, stream_chat
from testkit.waiting import wait_until

TOKENS = [" one", " two", " three", " four", " five"]
GRACE_SECONDS = 2.0
HELD_BATCH = 6
MAX_HELD_STREAMS = 48


def recorded(workers: TwoWorkers, streams: int) -> bool:
    """All `streams` are counted, in one worker or the other."""
    return sum(workers.per_worker("counter", "llm_streams_total").values()) == streams


def both_busy(shares: dict[int, float]) -> bool:
    """Each of the two workers has a share."""
    return len(shares) == 2 and min(shares.values()) >= 1


class TwoWorkers:
    """The service in two worker processes, its stderr collected line by line."""

    def __init__(self, upstream: FakeUpstream, tmp_path: Path) -> None:
        self.process, self.base_url = start_service_process(
            tmp_path,
            OPENAI_API_KEY=TEST_KEY,
            OPENAI_BASE_URL=upstream.base_url,
            UPSTREAM_MAX_RETRIES="0",
            WORKERS="2",
            SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
            TMPDIR=str(tmp_path),  # where the service makes its metrics directory
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # `/healthz` answered from one worker; the other may still be starting, and until it
        # accepts, the kernel hands it no connection (a CI run saw 48 streams of 48 on one).
        started = "Application startup complete."
        assert wait_until(lambda: "".join(self.lines).count(started) == 2, 30), self.lines
        directories = list(tmp_path.glob("llm-stream-metrics-*"))
        assert len(directories) == 1
        self.metrics_directory = directories[0]

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def summaries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith('{"time"')]

    def stream_summaries(self, count: int) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [s for s in self.summaries() if s.get("logger") == "service.streams"]

        wait_until(lambda: len(found()) >= count)
        return found()

    def per_worker(self, kind: str, sample: str) -> dict[int, float]:
        """Each worker's own value of `sample`, from its file (`counter`, `gauge_livesum`)."""
        shares = {}
        for path in self.metrics_directory.glob(f"{kind}_*.db"):
            merged = MultiProcessCollector.merge([str(path)], accumulate=False)  # type: ignore[no-untyped-call]
            pid = int(path.stem.rsplit("_", 1)[1])
            shares[pid] = sum(s.value for m in merged for s in m.samples if s.name == sample)
        return shares

    def worker_pids(self) -> set[int]:
        return {
            int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", "".join(self.lines))
        }

    def stop(self) -> None:
        """SIGTERM (the supervisor stops its workers), else SIGKILL to each process by PID."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(GRACE_SECONDS + 10)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids():  # still running: the supervisor is stuck
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                stop_process(self.process)
        self._reader.join(10)  # the workers' end of stderr closes with them
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def workers(upstream: FakeUpstream, tmp_path: Path) -> Iterator[TwoWorkers]:
    running = TwoWorkers(upstream, tmp_path)
    yield running
    running.stop()


def test_metrics_sum_both_workers_exactly(workers: TwoWorkers, upstream: FakeUpstream) -> None:
    upstream.default_reply = Reply(pieces=answer_pieces(TOKENS), pause=0.02)
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):  # batches of concurrent streams, until both workers served some
            batch = [pool.submit(stream_chat, workers.base_url, {"prompt": "hi"}) for _ in range(8)]
            for future in batch:
                response, events = future.result(timeout=30)
                assert response.status_code == 200
                assert events[-1].data == "[DONE]"
            sent += len(batch)
            # Recorded once the response has ended, just after the client read its end.
            assert wait_until(partial(recorded, workers, sent))
            served = workers.per_worker("counter", "llm_streams_total")
            if both_busy(served):
                break
    assert both_busy(served), served

    summaries = workers.stream_summaries(sent)
    assert len(summaries) == sent
    ttft = sum(s["ttft_ms"] for s in summaries) / 1000
    overhead = sum(s["ttft_ms"] - s["upstream_ttft_ms"] for s in summaries) / 1000
    tolerance = sent * 1e-6  # each logged figure is rounded to the microsecond
    # A worker records a stream's figures one after another, the counter first and the output
    # tokens last; a scrape the other worker serves can fall in between.
    output_tokens = len(TOKENS) * sent

    def all_recorded() -> bool:
        metrics = scrape(workers.base_url)
        return metrics.value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == (
            output_tokens
        )

    assert wait_until(all_recorded)
    for _ in range(4):  # whichever worker answers the scrape, the figures are the sums
        metrics = scrape(workers.base_url)
        assert metrics.value("llm_streams_total", outcome="completed") == sent
        assert metrics.value("gen_ai_server_time_to_first_token_seconds_count") == sent
        assert metrics.value("gen_ai_server_time_to_first_token_seconds_sum") == pytest.approx(
            ttft, abs=tolerance
        )
        assert metrics.value("llm_stream_overhead_seconds_sum") == pytest.approx(
            overhead, abs=tolerance
        )
        assert metrics.value("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == (
            7 * sent
        )
        assert metrics.value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == (
            output_tokens
        )
        assert metrics.value("llm_streams_in_flight") == 0
        assert metrics.value("llm_streams_capacity") == 2 * 200


def consume(base_url: str) -> list[SSEEvent]:
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", base_url + "/api/chat/stream", json={"prompt": "long"}) as response,
    ):
        assert response.status_code == 200
        return read_events(response)


def hold_streams_in_both(
    workers: TwoWorkers, upstream: FakeUpstream, pool: ThreadPoolExecutor
) -> tuple[list[Future[list[SSEEvent]]], dict[int, float]]:
    """Long streams opened in concurrent batches until each worker holds some; the streams,
    and how many each worker holds. Batches, because connections arriving one at a time tend
    to be accepted by the same worker (it is the one awake): seen here, 12 of 12. Silent
    streams, because a worker kept busy by its streams is the one awake too: with a token
    every 0.1 s, a CI run saw 48 of 48 on one worker."""
    upstream.default_reply = first_token_then_silence([" l"] * 5, 5.0)  # idle, open ~35 s
    opened: list[Future[list[SSEEvent]]] = []
    while len(opened) < MAX_HELD_STREAMS:
        opened += [pool.submit(consume, workers.base_url) for _ in range(HELD_BATCH)]
        assert upstream.wait_for_exchanges(len(opened))
        holding = workers.per_worker("gauge_livesum", "llm_streams_in_flight")
        if both_busy(holding) and sum(holding.values()) == len(opened):
            break
    assert both_busy(holding), (holding, workers.lines[-30:])
    return opened, holding


def test_each_worker_drains_on_sigterm(workers: TwoWorkers, upstream: FakeUpstream) -> None:
    with ThreadPoolExecutor(MAX_HELD_STREAMS) as pool:
        opened, _ = hold_streams_in_both(workers, upstream, pool)
        assert scrape(workers.base_url).value("llm_streams_in_flight") == len(opened)
        signalled_at = time.monotonic()
        workers.process.send_signal(signal.SIGTERM)  # to the supervisor only
        # Refused from then on, as by one process (not left waiting in the listen queue).
        assert wait_until_refusing(port_of(workers.base_url), timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.post(workers.base_url + "/api/chat/stream", json={"prompt": "late"}, timeout=5)
        results = [future.result(timeout=30) for future in opened]
    workers.process.wait(timeout=GRACE_SECONDS + 10)
    exited_after = time.monotonic() - signalled_at

    for events in results:  # every stream, in either worker, ended in-band and complete
        assert events[-1].data == "[DONE]"
        assert events[-2].json()["error"]["type"] == "server_shutting_down"
    assert GRACE_SECONDS - 0.5 < exited_after < GRACE_SECONDS + 8
    assert workers.process.returncode == 0
    ended = workers.stream_summaries(len(opened))
    assert [s["error_type"] for s in ended] == ["server_shutting_down"] * len(opened)
    assert not workers.metrics_directory.exists()  # removed at exit


def test_a_dead_workers_streams_leave_the_gauge(
    workers: TwoWorkers, upstream: FakeUpstream
) -> None:
    with ThreadPoolExecutor(MAX_HELD_STREAMS) as pool:
        _, holding = hold_streams_in_both(workers, upstream, pool)
        dead, alive = sorted(holding)
        os.kill(dead, signal.SIGKILL)  # a worker crashing: uvicorn's supervisor starts another

        # The scrape marks it dead (prometheus-client's `mark_process_dead`): its live gauge
        # file goes, and only the living worker's streams are in flight.
        def only_living_streams() -> bool:
            return scrape(workers.base_url).value("llm_streams_in_flight") == holding[alive]

        assert wait_until(only_living_streams, timeout=10)
        assert not (workers.metrics_directory / f"gauge_livesum_{dead}.db").exists()
        assert (workers.metrics_directory / f"counter_{dead}.db").exists()  # counters stay
        workers.process.terminate()  # ends the living worker's streams (drained in band)
