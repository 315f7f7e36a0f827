"""The capacity sweep: how many tokens per second each target relays on its one core.

Streams open rise step by step (`Plan.sweep`); at each step the upstream is first called
directly, then each target still in the sweep is measured. A target passes a step while its
TTFT p99 stays within `Plan.ttft_budget_seconds` of direct's, with no errors and every token
delivered; its capacity is the aggregate tokens/s at the last step it passed. The sweep ends for
everyone when direct itself falls short of the offered rate: the load side's limit.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bench.compare.load import Level
from bench.compare.plan import Plan
from bench.compare.stats import Summary
from bench.compare.targets import DIRECT, Target

Measure = Callable[[Target, Level], Awaitable[Summary]]


@dataclass(frozen=True)
class Capacity:
    """The sweep's verdict for one target: the busiest level it passed, and why it stopped."""

    target: str
    tokens_per_second: float
    concurrency: int  # 0: it passed no level
    stopped_by: str


def failure(summary: Summary, direct: Summary, budget_seconds: float) -> str | None:
    """Why `summary` fails the sweep's pass mark, or None."""
    added = summary.ttft_p99 - direct.ttft_p99
    if summary.errors or summary.delivered < 0.999:
        return "errors or lost tokens"
    if math.isnan(added) or added > budget_seconds:
        return f"TTFT p99 +{added * 1000:,.0f} ms"
    return None


async def sweep(
    measure: Measure, plan: Plan, targets: Sequence[Target]
) -> tuple[list[Summary], list[Capacity]]:
    """Every level measured (direct's included), and each target's capacity."""
    measured: list[Summary] = []
    alive = list(targets)
    passed: dict[str, Summary] = {}
    stopped: dict[str, str] = {}
    per_stream = 1 / plan.pause_seconds
    for streams in plan.sweep:
        level = Level(streams, plan.sweep_rounds)
        direct = await measure(DIRECT, level)
        measured.append(direct)
        if direct.errors or direct.tokens_per_second < 0.9 * streams * per_stream:
            reason = (
                f"load side limit (direct {direct.tokens_per_second:,.0f} tokens/s "
                f"at {streams} streams)"
            )
            stopped.update({target.name: reason for target in alive})
            alive = []
            break
        for target in list(alive):
            # One noisy moment on a shared machine can fail a level: a failed level is run
            # once more, and the target stops only if it fails again.
            for _ in range(2):
                summary = await measure(target, level)
                measured.append(summary)
                why = failure(summary, direct, plan.ttft_budget_seconds)
                if why is None:
                    break
            if why is None:
                passed[target.name] = summary
                continue
            stopped[target.name] = f"{why} at {streams} streams (twice)"
            alive.remove(target)
        if not alive:
            break
    for target in alive:
        stopped[target.name] = "end of the sweep"
    capacities = []
    for target in targets:
        best = passed.get(target.name)
        capacities.append(
            Capacity(
                target=target.name,
                tokens_per_second=best.tokens_per_second if best else 0.0,
                concurrency=best.concurrency if best else 0,
                stopped_by=stopped.get(target.name, "not swept"),
            )
        )
    return measured, capacities
