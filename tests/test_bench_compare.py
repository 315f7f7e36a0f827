"""The side-by-side benchmark's harness (bench/compare), so it cannot silently rot.

The figures are its statistics and its table, checked on made-up observations; then one tiny
real run (20-token answers, a handful of streams) through the floor relay and the service,
against the paced upstream, checks that every part still fits: tokens counted, disconnects
seen by the upstream, CPU read, a missing route skipped with a note. LiteLLM is not installed
for this (it needs its own virtual environment); `make bench-compare` runs it.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.etree import ElementTree

import pytest

from bench.compare.flamegraph import render as flame_graph
from bench.compare.load import Level, LevelRun, StreamResult, is_leaver
from bench.compare.plan import Plan
from bench.compare.profile import by_part, fold
from bench.compare.report import gateway_table, table
from bench.compare.run import Cores, compare
from bench.compare.stats import ProcessUse, Summary, UpstreamRecord, percentile, summarize
from bench.compare.sweep import Capacity, sweep
from bench.compare.targets import DIRECT, TARGETS, Target, message_body

pytestmark = pytest.mark.bench


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.99) == 20.0  # of 20 samples, p99 is the largest
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_leavers_are_spread_evenly() -> None:
    marked = [index for index in range(20) if is_leaver(index, 0.1)]
    assert marked == [9, 19]
    assert sum(is_leaver(index, 0.8) for index in range(25)) == 20
    assert not any(is_leaver(index, 0.0) for index in range(10))


def _run() -> LevelRun:
    """Two streams that stayed (10 and 8 of 10 tokens) and two that left after 3 tokens."""
    run = LevelRun(started=100.0, seconds=2.0, gaps=[0.01, 0.01, 0.03, 0.0])
    run.results = [
        StreamResult(1, False, 100.0, status=200, first_token_at=100.020, tokens=10),
        StreamResult(2, False, 100.5, status=200, first_token_at=100.540, tokens=8),
        StreamResult(3, True, 101.0, status=200, first_token_at=101.010, tokens=3, left_at=101.1),
        StreamResult(4, True, 101.2, status=200, first_token_at=101.230, tokens=3, left_at=101.3),
        StreamResult(5, False, 101.4, error="HTTP 429"),
    ]
    run.buckets = [5] * 20
    return run


def test_summary_of_a_level() -> None:
    records = {
        3: UpstreamRecord(tokens_sent=4, completed=False, left_at=101.1015),
        4: UpstreamRecord(tokens_sent=10, completed=True, left_at=None),  # never let go
    }
    use = ProcessUse(
        gateway_cpu_seconds=0.024, gateway_rss_peak=2**20 * 12, gateway_rss_idle=2**20 * 2
    )
    summary = summarize("relay", 2, _run(), records, use, answer_tokens=10, answer_seconds=0.1)
    assert summary.ttft_p50 == pytest.approx(0.020)
    assert summary.ttft_p99 == pytest.approx(0.040)
    assert summary.gap_p99 == pytest.approx(0.03)
    assert summary.delivered == pytest.approx(18 / 30)  # the 429 delivered nothing
    assert summary.errors == {"HTTP 429": 1}
    assert summary.tokens == 24
    assert summary.cpu_per_1k_tokens == pytest.approx(1000.0)  # 24 ms for 24 tokens
    assert summary.disconnect_p50 == pytest.approx(0.0015)
    assert math.isinf(summary.disconnect_p99)
    assert (summary.ran_to_end, summary.still_open, summary.leavers) == (1, 0, 2)
    assert summary.memory_per_stream is None  # two streams are too few to tell
    many = summarize("relay", 100, _run(), records, use, answer_tokens=10, answer_seconds=0.1)
    assert many.memory_per_stream == pytest.approx(2**20 * 10 / 100)


def test_table_shows_time_added_over_direct() -> None:
    records = {3: UpstreamRecord(4, False, 101.1015), 4: UpstreamRecord(10, True, None)}
    relay = summarize(
        "relay", 2, _run(), records, ProcessUse(), answer_tokens=10, answer_seconds=0.1
    )
    direct_run = _run()
    for result in direct_run.results:
        if result.first_token_at is not None:
            result.first_token_at -= 0.005
    direct = summarize(
        "direct", 2, direct_run, records, ProcessUse(), answer_tokens=10, answer_seconds=0.1
    )
    text = table([direct, relay], {2: direct})
    rows = text.splitlines()
    assert len(rows) == 4
    assert rows[2].startswith("| direct | 2 | (15.0 / 35.0) |")
    assert rows[3].startswith("| relay | 2 | +5.0 / +5.0 |")
    assert "1.5 / not closed (1 of 2 ran to the end)" in rows[3]
    assert "1 x HTTP 429" in rows[3]
    assert "| 60.0% |" in rows[3]  # 18 of 30 tokens


def test_profile_folding() -> None:
    collapsed = (
        'process 7:"python -m service";thread (0x1);run (a.py:3);'
        "send (uvicorn/protocols/http/httptools_impl.py:470);"
        "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:480) 6\n"
        "run (a.py:3);chunk_events (service/upstream/openai_events.py:150);"
        "loads (json/__init__.py:346) 3\n"
        "run (a.py:4);poll (b.py:9) 1\n"
    )
    total, own, inclusive = fold(collapsed)
    assert total == 10
    assert inclusive["run (a.py)"] == 10  # line numbers are folded away
    assert own["loads (json/__init__.py)"] == 3
    parts = by_part(collapsed)
    assert parts["socket write to the client (uvicorn send)"] == 6
    assert parts["parsing each chunk, picking its fields"] == 3
    assert sum(parts.values()) == 10


def test_capacity_table() -> None:
    records = {3: UpstreamRecord(4, False, 101.1015)}
    use = ProcessUse(gateway_rss_idle=2**20 * 40)
    rows = [
        summarize(name, 2, _run(), records, use, answer_tokens=10, answer_seconds=0.1)
        for name in ("direct", "fast", "slow")
    ]
    capacities = [
        Capacity("fast", 14_950.0, 150, "TTFT p99 +120 ms at 200 streams (twice)"),
        Capacity("slow", 0.0, 0, "TTFT p99 +900 ms at 10 streams (twice)"),
    ]
    lines = gateway_table(rows, capacities).splitlines()
    assert lines[2:] == [
        "| fast | 40 | 14,950 | 150 | TTFT p99 +120 ms at 200 streams (twice) |",
        "| slow | 40 | none | - | TTFT p99 +900 ms at 10 streams (twice) |",
    ]


async def test_sweep_stops_each_target_at_the_level_it_fails_twice() -> None:
    """A fake measure: 'steady' passes up to 20 streams, 'flaky' fails 20 streams once only."""
    calls: list[tuple[str, int]] = []

    async def measure(target: Target, level: Level) -> Summary:
        calls.append((target.name, level.concurrency))
        added = 0.0
        if target.name == "steady" and level.concurrency > 20:
            added = 0.5
        if target.name == "flaky" and calls.count(("flaky", 20)) == 1 and level.concurrency == 20:
            added = 0.5
        run = LevelRun(started=0.0, seconds=6.0, buckets=[level.concurrency * 10] * 60)
        run.results = [StreamResult(1, False, 0.0, status=200, first_token_at=0.01 + added)]
        run.results[0].tokens = 10
        return summarize(
            target.name,
            level.concurrency,
            run,
            {},
            ProcessUse(),
            answer_tokens=10,
            answer_seconds=2.0,
        )

    targets = [Target(name, "floor", "/", message_body) for name in ("steady", "flaky")]
    plan = Plan(levels=(), sweep=(10, 20, 40), answer_tokens=200, pause_seconds=0.01)
    measured, capacities = await sweep(measure, plan, targets)
    assert capacities == [
        # 100 tokens per stream per second, as the made-up buckets say
        Capacity("steady", 2000.0, 20, "TTFT p99 +500 ms at 40 streams (twice)"),
        Capacity("flaky", 4000.0, 40, "end of the sweep"),
    ]
    assert calls.count(("flaky", 20)) == 2  # failed once, passed when run again
    assert calls.count(("steady", 40)) == 2
    assert [s.target for s in measured].count("direct") == 3


@pytest.mark.server  # starts the paced upstream, the floor and the service as processes
def test_a_tiny_real_run(tmp_path: Path) -> None:
    floor, service = (TARGETS[1], TARGETS[2])
    assert (floor.gateway, service.path) == ("floor", "/api/chat/stream")
    missing = Target("service /nowhere", "service", "/nowhere", message_body)
    plan = Plan(
        levels=(Level(1, 2, 0.5, leave_after=5), Level(6, 1, 0.5, leave_after=5)),
        # A second-long answer: a gateway on a loaded machine still sees its client leave
        # (after 5 tokens) well before the upstream would have finished anyway.
        answer_tokens=100,
        pause_seconds=0.01,
        grace_seconds=20.0,
    )
    outcome = compare(
        plan, [DIRECT, floor, service, missing], cores=Cores.pick(), litellm=None, logs=tmp_path
    )
    assert any("service /nowhere skipped: /nowhere answers 404" in n for n in outcome.notes)
    seen = {(summary.target, summary.concurrency): summary for summary in outcome.summaries}
    assert set(seen) == {
        (target.name, streams) for target in (DIRECT, floor, service) for streams in (1, 6)
    }
    for summary in outcome.summaries:
        assert summary.errors == {}, summary
        assert summary.delivered == 1.0, summary
        assert summary.leavers >= 1, summary
        # Every gateway lets the upstream go when its client leaves (generous bound: 2 s).
        assert summary.disconnect_p99 < 2.0, summary
        if summary.target != "direct":
            assert summary.cpu_per_1k_tokens is not None
            assert summary.cpu_per_1k_tokens > 0
            assert summary.rss_idle is not None
            assert summary.rss_idle > 10 * 2**20


def test_flame_graph_boxes_are_as_wide_as_their_samples() -> None:
    collapsed = "main (a.py:1);read (b.py:2) 3\nmain (a.py:1);write (c.py:3) 1\n"
    svg = flame_graph(collapsed, "t")
    document = ElementTree.fromstring(svg)  # noqa: S314  # well-formed; our own SVG
    widths = {
        group.findtext("{http://www.w3.org/2000/svg}title", "").split(":")[0]: float(
            group.find("{http://www.w3.org/2000/svg}rect").get("width", "0")  # type: ignore[union-attr]
        )
        for group in document.iter("{http://www.w3.org/2000/svg}g")
    }
    assert widths["all"] == widths["main (a.py)"] == 1200
    assert widths["read (b.py)"] == 900
    assert widths["write (c.py)"] == 300
