"""Prometheus metrics: every stream's record, observed once when it ends (issue #10).

Names follow the OpenTelemetry GenAI semantic conventions mapped to Prometheus (dots become
underscores, the unit becomes a suffix: `gen_ai.server.time_to_first_token` in `s` is
`gen_ai_server_time_to_first_token_seconds`; `{token}` has no suffix), with the conventions'
bucket boundaries and attributes as labels:
https://github.com/open-telemetry/semantic-conventions/blob/v1.41.0/docs/gen-ai/gen-ai-metrics.md
What the conventions do not cover (the service's own overhead, streams in flight, endings,
cancellations, retries, heartbeats, the limits) is named `llm_*`.

Every label value is bounded: the operation is `chat`; the provider comes from the provider
table; a model not named in the configuration (`DEFAULT_MODEL`, `METRICS_MODELS`) is counted as
`other`; routes are route templates, formats the format table's names, outcomes and error types
fixed sets in the code.

Nothing here runs per token: `StreamRecorder` keeps timestamps and counts while a stream runs,
and `stream_finished` turns them into observations once, into the labelled series of its kind
of stream, looked up once per kind (`_StreamSeries`): prometheus-client's `labels()` checks and
looks up its values on every call, and a stream's end called it eight times, ~4% of the CPU of
a request (issue #16). Under several worker processes
(`WORKERS`, `service.workers`) prometheus-client's multiprocess mode keeps each worker's values
in files under `PROMETHEUS_MULTIPROC_DIR`, and `exposition` sums them over all workers.
"""

from __future__ import annotations

import contextlib
import glob
import os

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service.metrics import StreamRecorder
from service.settings import Settings
from service.upstream.providers import PROVIDERS

# The `*_created` series double every counter and histogram and are not available in
# multiprocess mode; leave them out in both modes so the exposition is the same.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (the library leaves it untyped)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus version reads
OPERATION = "chat"  # `gen_ai.operation.name`: every stream is a chat completion
OTHER_MODEL = "other"

# The conventions' boundaries, extended where streams of this service go past them: reasoning
# models think for tens of seconds before their first token and answer for minutes, and fast
# models emit a token every few milliseconds.
TTFT_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5),
    *(10.0, 15.0, 20.0, 30.0, 60.0, 120.0),
)
# Request duration and the client's time to first chunk.
DURATION_BUCKETS = (
    *(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
    *(163.84, 327.68, 655.36, 1310.72, 2621.44),  # MAX_STREAM_SECONDS is 30 minutes
)
TIME_PER_TOKEN_BUCKETS = (
    *(0.001, 0.0025, 0.005),
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
)
TOKEN_BUCKETS = (
    *(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
    67108864,
)
# The service's own share of time to first token: a fraction of a millisecond idle, more under
# load (the event loop is shared by every stream in a worker).
OVERHEAD_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    2.5,
)

STREAM_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "route",
    "format",
)


def gen_ai_provider_name(provider: str) -> str:
    """`gen_ai.provider.name` for a provider of the provider table."""
    entry = PROVIDERS.get(provider)
    return entry.gen_ai_name if entry is not None else provider


class PrometheusMetrics:
    """The instruments, registered in a registry of their own (so several apps can live in one
    process, as in the tests), and the exposition for `GET /metrics`. A `StreamObserver`."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self._models = settings.metrics_model_names
        self._series: dict[tuple[str, ...], _StreamSeries] = {}
        self._multiprocess_directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        registry = self.registry

        def histogram(
            name: str, meaning: str, buckets: tuple[float, ...], *extra: str
        ) -> Histogram:
            labels = (*STREAM_LABELS, *extra)
            return Histogram(name, meaning, labels, registry=registry, buckets=buckets)

        self.time_to_first_token = histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Request received to the first text handed to the client",
            TTFT_BUCKETS,
        )
        self.time_to_first_chunk = histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Upstream request started to its first text received",
            DURATION_BUCKETS,
        )
        self.overhead = histogram(
            "llm_stream_overhead_seconds",
            "The service's own share of time to first token: server TTFT minus upstream TTFT",
            OVERHEAD_BUCKETS,
        )
        self.time_per_output_token = histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per visible output token after the first (1 / tokens per second)",
            TIME_PER_TOKEN_BUCKETS,
        )
        self.request_duration = histogram(
            "gen_ai_server_request_duration_seconds",
            "Request received to the stream's end, however it ended",
            DURATION_BUCKETS,
            "outcome",
            "error_type",
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per stream: input (the upstream's prompt count) and output",
            (*STREAM_LABELS[:4], "gen_ai_token_type"),
            registry=registry,
            buckets=TOKEN_BUCKETS,
        )
        self.streams = Counter(
            "llm_streams",
            "Streams by how they ended",
            (*STREAM_LABELS, "outcome", "error_type"),
            registry=registry,
        )
        self.cancellations = Counter(
            "llm_stream_cancellations",
            "Streams the client ended: before the first token, while streaming, or by not "
            "reading (SEND_TIMEOUT_SECONDS)",
            (*STREAM_LABELS, "phase"),
            registry=registry,
        )
        self.heartbeats = Counter(
            "llm_stream_heartbeats",
            "Heartbeats sent to keep idle streams open through proxies",
            STREAM_LABELS,
            registry=registry,
        )
        self.retries = Counter(
            "llm_upstream_retries",
            "Upstream requests the SDK sent again (429, 5xx, connection errors)",
            ("gen_ai_provider_name",),
            registry=registry,
        )
        self.rejections = Counter(
            "llm_stream_limit_rejections",
            "Streams refused with 429 by the concurrency limits",
            ("limit",),
            registry=registry,
        )
        # Gauges: summed over the workers that are alive (a dead worker's streams are gone).
        self.in_flight = Gauge(
            "llm_streams_in_flight",
            "Streams open now",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.capacity = Gauge(
            "llm_streams_capacity",
            "MAX_CONCURRENT_STREAMS, summed over the workers",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.capacity.set(settings.max_concurrent_streams)
        self._provider = gen_ai_provider_name(settings.provider)
        self.retries.labels(self._provider)  # shown as 0 before the first retry
        for limit in ("per_process", "per_key"):
            self.rejections.labels(limit)

    # -- what the rest of the service reports ------------------------------------------------

    def upstream_retried(self) -> None:
        self.retries.labels(self._provider).inc()

    def limit_rejected(self, limit: str) -> None:
        """A 429 from `StreamLimits`: `per_process` or `per_key`."""
        self.rejections.labels(limit).inc()

    def stream_opened(self, recorder: StreamRecorder) -> None:
        self.in_flight.inc()

    def stream_finished(self, recorder: StreamRecorder) -> None:
        self.in_flight.dec()
        labels = (
            OPERATION,
            gen_ai_provider_name(recorder.provider),
            recorder.model if recorder.model in self._models else OTHER_MODEL,
            recorder.endpoint,
            recorder.wire_format,
        )
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _StreamSeries(self, labels)
        outcome, error_type = recorder.outcome or "error", recorder.error_type or ""
        count, duration = series.ended(outcome, error_type)
        count.inc()
        assert recorder.ended_at is not None
        duration.observe(recorder.ended_at - recorder.received_at)
        first = recorder.first_text_at
        if first is not None:
            series.time_to_first_token.observe(first - recorder.received_at)
            if recorder.upstream_started_at is not None:
                upstream_started = recorder.upstream_started_at
                series.time_to_first_chunk.observe(first - upstream_started)
                # (first - received) - (first - upstream_started), as in the `end` event.
                series.overhead.observe(upstream_started - recorder.received_at)
        decode = recorder.decode()
        if decode is not None:
            series.time_per_output_token.observe(decode[0] / decode[1])
        if recorder.usage is not None:
            series.input_tokens.observe(recorder.usage.prompt_tokens)
        if recorder.usage is not None or recorder.text_deltas:
            series.output_tokens.observe(recorder.output_tokens)
        if recorder.heartbeats:
            series.heartbeats.inc(recorder.heartbeats)
        if outcome == "cancelled":
            self.cancellations.labels(*labels, _cancellation_phase(recorder)).inc()

    # -- exposition ---------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text exposition: this process's registry, or with several workers the sum of
        every worker's files. Reads files under multiprocess mode: call it off the event loop."""
        directory = self._multiprocess_directory
        if directory is None:
            return generate_latest(self.registry)
        forget_dead_workers(directory)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class _StreamSeries:
    """The labelled series one kind of stream (operation, provider, model, endpoint, format)
    is observed into: looked up in each metric once (module docstring)."""

    __slots__ = (
        "_by_ending",
        "_labels",
        "_metrics",
        "heartbeats",
        "input_tokens",
        "output_tokens",
        "overhead",
        "time_per_output_token",
        "time_to_first_chunk",
        "time_to_first_token",
    )

    def __init__(self, metrics: PrometheusMetrics, labels: tuple[str, ...]) -> None:
        self._metrics = metrics
        self._labels = labels
        self.time_to_first_token = metrics.time_to_first_token.labels(*labels)
        self.time_to_first_chunk = metrics.time_to_first_chunk.labels(*labels)
        self.overhead = metrics.overhead.labels(*labels)
        self.time_per_output_token = metrics.time_per_output_token.labels(*labels)
        self.input_tokens = metrics.token_usage.labels(*labels[:4], "input")
        self.output_tokens = metrics.token_usage.labels(*labels[:4], "output")
        self.heartbeats = metrics.heartbeats.labels(*labels)
        # (outcome, error type) -> the stream count and request duration series.
        self._by_ending: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def ended(self, outcome: str, error_type: str) -> tuple[Counter, Histogram]:
        """The stream count and duration series of streams that ended so (a few kinds each)."""
        ending = (outcome, error_type)
        found = self._by_ending.get(ending)
        if found is None:
            metrics, labels = self._metrics, self._labels
            found = self._by_ending[ending] = (
                metrics.streams.labels(*labels, *ending),
                metrics.request_duration.labels(*labels, *ending),
            )
        return found


def _cancellation_phase(recorder: StreamRecorder) -> str:
    if recorder.delivery == "send_timeout":
        return "not_reading"
    return "before_first_token" if recorder.first_text_at is None else "streaming"


def forget_dead_workers(directory: str) -> None:
    """`mark_process_dead` for every worker whose files are there and that no longer runs, as
    prometheus-client's multiprocess documentation asks of the process manager. uvicorn's
    supervisor has no hook for a worker's exit (it restarts dead workers by itself), so the
    scrape does it: the `live*` gauges then stop counting a dead worker's streams."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid_text = os.path.basename(path).removesuffix(".db").rsplit("_", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):  # another worker's scrape was first
                mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            continue  # alive, under another user
