"""What a run measures: the levels, the sweep, the answer's length and pace, and the bounds.

`QUICK` tries the harness in a few minutes; `FULL` makes bench/compare.md's figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.compare.load import Level


@dataclass(frozen=True)
class Plan:
    levels: tuple[Level, ...]
    # Streams open at each step of the capacity sweep (empty: no sweep).
    sweep: tuple[int, ...] = ()
    sweep_rounds: int = 2
    # The sweep's pass mark: TTFT p99 at most this much above calling the upstream directly.
    ttft_budget_seconds: float = 0.1
    answer_tokens: int = 200
    pause_seconds: float = 0.01  # 100 tokens per second
    # Streams still open this long after their level should have ended are cut (timeouts).
    grace_seconds: float = 30.0
    # A target whose added TTFT p50 exceeds this is saturated: its busier levels are skipped.
    saturated_seconds: float = 5.0

    @property
    def answer_seconds(self) -> float:
        return self.answer_tokens * self.pause_seconds

    def describe(self) -> str:
        levels = "; ".join(_describe(level) for level in self.levels)
        sweep = (
            f"; capacity sweep over {', '.join(map(str, self.sweep))} open streams "
            f"({self.sweep_rounds} in a row)"
            if self.sweep
            else "; no capacity sweep"
        )
        rate = 1 / self.pause_seconds
        return f"{self.answer_tokens} tokens per answer at {rate:.0f} tokens/s; {levels}{sweep}"


def _describe(level: Level) -> str:
    text = f"{level.concurrency} open x {level.streams_per_worker} in a row"
    if level.leave_share:
        text += f", {level.leave_share:.0%} leave after {level.leave_after} tokens"
    return text


QUICK = Plan(levels=(Level(1, 4, 0.5), Level(100, 1, 0.1), Level(250, 1, 0.1)), grace_seconds=10.0)
FULL = Plan(
    levels=(Level(1, 25, 0.8), Level(100, 3, 0.1), Level(250, 3, 0.1)),
    sweep=(10, 25, 50, 100, 150, 200, 300, 400, 500, 600, 800, 1000),
)
