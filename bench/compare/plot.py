"""The PNG: added TTFT p99 and CPU per token against streams open, one line per target."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.compare.stats import Summary


def plot(summaries: Sequence[Summary], path: Path, title: str) -> None:
    import matplotlib  # imported here: the tests never draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    # The first measurement of a target at a level wins (the main levels come before the sweep).
    unique: dict[tuple[str, int], Summary] = {}
    for summary in summaries:
        unique.setdefault((summary.target, summary.concurrency), summary)
    summaries = list(unique.values())
    direct = {s.concurrency: s for s in summaries if s.target == "direct"}
    figure, (latency, cpu) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    for target in dict.fromkeys(s.target for s in summaries):
        rows = sorted(
            (s for s in summaries if s.target == target and s.concurrency in direct),
            key=lambda s: s.concurrency,
        )
        if target == "direct" or not rows:
            continue
        streams = [s.concurrency for s in rows]
        # Added time cannot be drawn on a log axis below 0.1 ms; noise can even make it negative.
        added = [max(0.1, (s.ttft_p99 - direct[s.concurrency].ttft_p99) * 1000) for s in rows]
        latency.plot(streams, added, marker="o", label=target)
        costs = [(s.concurrency, s.cpu_per_1k_tokens) for s in rows]
        known = [(n, c) for n, c in costs if c is not None]
        if known:
            cpu.plot([n for n, _ in known], [c for _, c in known], marker="o", label=target)
    latency.set(
        xlabel="streams open (log)",
        xscale="log",
        ylabel="added TTFT p99 (ms, log)",
        yscale="log",
        title="time to first token added over direct",
    )
    cpu.set(
        xlabel="streams open (log)",
        xscale="log",
        ylabel="gateway CPU ms per 1,000 tokens (log)",
        yscale="log",
        title="CPU per relayed token (one core)",
    )
    for axes in (latency, cpu):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
