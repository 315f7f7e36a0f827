"""One comparison run: start everything, stream through each target level by level, summarize.

Every process is started here and stopped by its PID when the run ends, however it ends
(exception, Ctrl-C, SIGTERM). The fake upstream and the load client share one core; each
gateway is pinned to the other, so a gateway's CPU time and latency are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.compare.flamegraph import render as flame_graph
from bench.compare.gateways import GATEWAYS, Context
from bench.compare.load import Level, LevelRun, run_level
from bench.compare.plan import Plan
from bench.compare.profile import Recording
from bench.compare.profile import render as render_profile
from bench.compare.stats import SETTLE_SECONDS, ProcessUse, Summary, UpstreamRecord, summarize
from bench.compare.sweep import Capacity, sweep
from bench.compare.targets import DIRECT, Target
from bench.processes import ListeningProcess, process_cpu_seconds
from bench.upstream_server import UpstreamProcess


@dataclass
class Outcome:
    summaries: list[Summary] = field(default_factory=list)
    sweep: list[Summary] = field(default_factory=list)
    capacities: list[Capacity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Profiling:
    """Record py-spy profiles of each gateway during the level with `streams` open."""

    streams: int
    prefix: Path  # <prefix>-<target>.txt (collapsed stacks) and .md (the top functions)


@dataclass(frozen=True)
class Cores:
    gateway: int
    load: int

    @classmethod
    def pick(cls, gateway: int | None = None, load: int | None = None) -> Cores:
        available = sorted(os.sched_getaffinity(0))
        return cls(
            gateway=available[-1] if gateway is None else gateway,
            load=available[0] if load is None else load,
        )


def compare(
    plan: Plan,
    targets: Sequence[Target],
    *,
    cores: Cores,
    litellm: Path | None,
    logs: Path | None = None,
    profiling: Profiling | None = None,
) -> Outcome:
    """Run `plan` against `targets` (DIRECT is always measured, first, as the baseline)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per stream, and more
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores.load})  # the upstream started below inherits it
    outcome = Outcome()
    if cores.gateway == cores.load:
        outcome.notes.append("only one core: gateways share it with the load side")
    logs = logs or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        with _processes(plan, targets, cores, litellm, logs, outcome) as (upstream, gateways):
            session = Session(plan, upstream, gateways, profiling)
            uvloop.run(session.run([t for t in targets if t is not DIRECT], outcome))
    finally:
        os.sched_setaffinity(0, affinity)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(f"gateway output: {logs}", flush=True)
    return outcome


@contextlib.contextmanager
def _processes(
    plan: Plan,
    targets: Sequence[Target],
    cores: Cores,
    litellm: Path | None,
    logs: Path,
    outcome: Outcome,
) -> Iterator[tuple[UpstreamProcess, dict[str, ListeningProcess]]]:
    with contextlib.ExitStack() as stack:
        upstream = UpstreamProcess(plan.answer_tokens, plan.pause_seconds, paced=True)
        stack.callback(upstream.stop)
        context = Context(upstream=upstream, cpu=cores.gateway, logs=logs, litellm=litellm)
        gateways: dict[str, ListeningProcess] = {}
        for name in dict.fromkeys(t.gateway for t in targets if t.gateway):
            try:
                gateways[name] = GATEWAYS[name](context)
            except RuntimeError as error:
                outcome.notes.append(f"{name} skipped: {error}")
                continue
            stack.callback(gateways[name].stop)
        yield upstream, gateways


class Session:
    def __init__(
        self,
        plan: Plan,
        upstream: UpstreamProcess,
        gateways: dict[str, ListeningProcess],
        profiling: Profiling | None = None,
    ) -> None:
        self.plan = plan
        self.profiling = profiling
        self.upstream = upstream
        self.gateways = gateways
        self.labels = itertools.count(1)
        self.idle_rss: dict[str, int] = {}

    async def run(self, targets: Sequence[Target], outcome: Outcome) -> None:
        active = [DIRECT]
        for target in targets:
            if target.gateway not in self.gateways:
                continue  # its gateway did not start (noted)
            problem = await self.probe(target)
            if problem:
                outcome.notes.append(f"{target.name} skipped: {problem}")
                print(f"{target.name} skipped: {problem}", flush=True)
            else:
                active.append(target)
        measurable = active[1:]
        for gateway, process in self.gateways.items():
            self.idle_rss[gateway] = process.rss()
        direct: Summary | None = None
        for level in self.plan.levels:
            for target in list(active):
                summary = await self.measure(target, level, outcome)
                outcome.summaries.append(summary)
                if target is DIRECT:
                    direct = summary
                elif direct and summary.ttft_p50 - direct.ttft_p50 > self.plan.saturated_seconds:
                    active.remove(target)
                    note = (
                        f"{target.name} saturated at {level.concurrency} streams (added TTFT p50 "
                        f"over {self.plan.saturated_seconds:.0f} s): busier levels skipped"
                    )
                    outcome.notes.append(note)
        if self.plan.sweep:

            async def measure(target: Target, level: Level) -> Summary:
                return await self.measure(target, level, memory=False)

            outcome.sweep, outcome.capacities = await sweep(measure, self.plan, measurable)

    def port_of(self, target: Target) -> int:
        if target.gateway is None:
            return self.upstream.port
        return self.gateways[target.gateway].port

    async def probe(self, target: Target) -> str | None:
        """Why `target` cannot be measured (its route answers 404, ...), or None."""
        run = await run_level(
            self.port_of(target),
            target,
            Level(1, 1),
            self.labels,
            answer_seconds=self.plan.answer_seconds,
            timeout_seconds=self.plan.answer_seconds + 30,
        )
        result = run.results[0]
        if result.status == 404:
            return f"{target.path} answers 404 (not there yet)"
        if result.error:
            return result.error
        if result.tokens != self.plan.answer_tokens:
            return f"{result.tokens} of {self.plan.answer_tokens} tokens arrived"
        return None

    async def measure(
        self, target: Target, level: Level, outcome: Outcome | None = None, *, memory: bool = True
    ) -> Summary:
        """One level of `target`. `memory`: report memory per stream, which is only right while
        levels rise (the heap keeps what an earlier, busier level grew it to)."""
        gateway = self.gateways.get(target.gateway) if target.gateway else None
        peak = 0

        async def sample_memory() -> None:
            nonlocal peak
            while gateway is not None:
                peak = max(peak, gateway.rss())
                await asyncio.sleep(0.1)

        await self.upstream_control(b"POST /_bench/reset")
        sampler = asyncio.ensure_future(sample_memory())
        recording = None
        profiling = self.profiling
        if profiling and gateway and outcome and level.concurrency == profiling.streams:
            slug = re.sub(r"[^a-z0-9]+", "-", target.name.lower()).strip("-")
            recording = Recording(gateway.pid, Path(f"{profiling.prefix}-{slug}.txt"))
        cpu_before = gateway.cpu() if gateway else 0.0
        load_before = self._load_cpu()
        run: LevelRun = await run_level(
            self.port_of(target),
            target,
            level,
            self.labels,
            answer_seconds=self.plan.answer_seconds,
            timeout_seconds=(
                self.plan.answer_seconds * (1 + level.streams_per_worker) + self.plan.grace_seconds
            ),
        )
        cpu_used = gateway.cpu() - cpu_before if gateway else None
        load_used = self._load_cpu() - load_before
        if recording and outcome:
            recording.stop()
            report = recording.path.with_suffix(".md")
            title = f"{target.name}, {level.concurrency} streams open"
            collapsed = recording.path.read_text()
            report.write_text(render_profile(title, collapsed))
            recording.path.with_suffix(".svg").write_text(flame_graph(collapsed, title))
            outcome.profiles.append(report)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        records = await self.settled_records(run)
        use = ProcessUse(
            gateway_cpu_seconds=cpu_used,
            gateway_rss_peak=peak if gateway and memory else None,
            gateway_rss_idle=self.idle_rss.get(target.gateway or ""),
            load_cpu_seconds=load_used,
        )
        summary = summarize(
            target.name,
            level.concurrency,
            run,
            records,
            use,
            answer_tokens=self.plan.answer_tokens,
            answer_seconds=self.plan.answer_seconds,
        )
        print(_progress(summary), flush=True)
        return summary

    def _load_cpu(self) -> float:
        return time.process_time() + process_cpu_seconds(self.upstream.process.pid)

    async def upstream_control(self, request_line: bytes) -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream.port)
        writer.write(request_line + b" HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
        return json.loads(response.split(b"\r\n\r\n", 1)[1])

    async def settled_records(self, run: LevelRun) -> dict[int, UpstreamRecord]:
        """The upstream's records, once every leaver's request has ended (or SETTLE_SECONDS)."""
        leavers = [result.label for result in run.results if result.left_at is not None]
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            records = await self.upstream_records()
            ended = all(
                (record := records.get(label)) and (record.completed or record.left_at)
                for label in leavers
            )
            if ended or time.monotonic() > deadline:
                return records
            await asyncio.sleep(0.05)

    async def upstream_records(self) -> dict[int, UpstreamRecord]:
        stats = await self.upstream_control(b"GET /_bench/stats")
        return {
            int(label): UpstreamRecord(tokens_sent=sent, completed=completed, left_at=left_at)
            for label, (sent, completed, left_at) in stats["streams"].items()
        }


def _progress(summary: Summary) -> str:
    cost = summary.cpu_per_1k_tokens
    cpu = "" if cost is None else f", {cost:.0f} ms CPU/1k"
    errors = f", errors {summary.errors}" if summary.errors else ""
    return (
        f"{summary.target:>30} {summary.concurrency:>5} open: TTFT p50 "
        f"{summary.ttft_p50 * 1000:7.1f} p99 {summary.ttft_p99 * 1000:7.1f} ms, "
        f"{summary.tokens_per_second:8,.0f} tokens/s, delivered {summary.delivered:.1%}"
        f"{cpu}, load core {summary.load_busy:.0%}{errors}"
    )
