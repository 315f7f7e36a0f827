"""From raw observations to the figures the table shows (pure functions, no I/O)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from bench.compare.load import LevelRun

MEMORY_MIN_STREAMS = 50
# How long after a level the upstream is watched for the last leavers' requests to close.
SETTLE_SECONDS = 5.0


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` 0.99 for p99); NaN for no values.

    Nearest rank never invents a value between two samples: p99 of 20 samples is the largest.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class UpstreamRecord:
    """What the paced upstream saw of one labelled stream (bench.paced_upstream)."""

    tokens_sent: int
    completed: bool
    left_at: float | None


@dataclass(frozen=True)
class ProcessUse:
    """The gateway's and the load side's resources during one level."""

    gateway_cpu_seconds: float | None = None
    gateway_rss_peak: int | None = None
    gateway_rss_idle: int | None = None
    load_cpu_seconds: float = 0.0


@dataclass(frozen=True)
class Summary:
    target: str
    concurrency: int
    streams: int
    ttft_p50: float
    ttft_p99: float
    gap_p99: float
    # Tokens received by the streams that stayed, over the tokens their answers have.
    delivered: float
    tokens: int
    tokens_per_second: float
    errors: dict[str, int] = field(default_factory=dict)
    disconnect_p50: float = math.nan
    disconnect_p99: float = math.nan
    # Leavers whose upstream answer ran to its end anyway, or was still open when last looked at.
    ran_to_end: int = 0
    still_open: int = 0
    leavers: int = 0
    cpu_per_1k_tokens: float | None = None
    rss_idle: int | None = None
    memory_per_stream: float | None = None
    load_busy: float = 0.0


def summarize(
    target: str,
    concurrency: int,
    run: LevelRun,
    upstream: dict[int, UpstreamRecord],
    use: ProcessUse,
    *,
    answer_tokens: int,
    answer_seconds: float,
) -> Summary:
    results = run.results
    ttfts = [ttft for result in results if (ttft := result.ttft) is not None]
    stayed = [result for result in results if not result.leaves]
    leavers = [result for result in results if result.leaves and result.left_at is not None]
    delays: list[float] = []
    ran_to_end = still_open = 0
    for result in leavers:
        record = upstream.get(result.label)
        if record is not None and record.left_at is not None:
            assert result.left_at is not None
            delays.append(record.left_at - result.left_at)
        elif record is not None and record.completed:
            ran_to_end += 1
        else:
            still_open += 1
    # An upstream request that was not closed is later than any that was: infinitely late.
    delays += [math.inf] * (ran_to_end + still_open)
    tokens = sum(result.tokens for result in results)
    expected = answer_tokens * len(stayed)
    errors = Counter(result.error for result in results if result.error)
    return Summary(
        target=target,
        concurrency=concurrency,
        streams=len(results),
        ttft_p50=percentile(ttfts, 0.5),
        ttft_p99=percentile(ttfts, 0.99),
        gap_p99=percentile(run.gaps, 0.99),
        delivered=sum(result.tokens for result in stayed) / expected if expected else math.nan,
        tokens=tokens,
        tokens_per_second=steady_rate(run, answer_seconds),
        errors=dict(errors),
        disconnect_p50=percentile(delays, 0.5),
        disconnect_p99=percentile(delays, 0.99),
        ran_to_end=ran_to_end,
        still_open=still_open,
        leavers=len(leavers),
        cpu_per_1k_tokens=(
            use.gateway_cpu_seconds / tokens * 1e6  # ms per 1,000 tokens
            if use.gateway_cpu_seconds is not None and tokens
            else None
        ),
        rss_idle=use.gateway_rss_idle,
        memory_per_stream=(
            (use.gateway_rss_peak - use.gateway_rss_idle) / concurrency
            # A few streams' memory is lost in the noise of the heap's own growth.
            if use.gateway_rss_peak is not None
            and use.gateway_rss_idle is not None
            and concurrency >= MEMORY_MIN_STREAMS
            else None
        ),
        load_busy=use.load_cpu_seconds / run.seconds if run.seconds else 0.0,
    )


def steady_rate(run: LevelRun, answer_seconds: float) -> float:
    """Tokens per second once every worker has started, until the first of them runs out.

    Workers start spread over one answer's duration and each runs its streams back to back, so
    between then and the last round's start all of them stream at once. With one round there is
    no such window, and the whole level is averaged instead.
    """
    window_end = run.seconds - answer_seconds
    if window_end - answer_seconds >= 1.0:
        return run.tokens_per_second(answer_seconds, window_end)
    return sum(run.buckets) / run.seconds if run.seconds else 0.0
