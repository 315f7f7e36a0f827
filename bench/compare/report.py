"""The Markdown report: the tables, and the machine and versions they were measured on.

Rendering is pure (summaries in, text out); only `machine` and `versions` look around.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.compare.stats import SETTLE_SECONDS, Summary
from bench.compare.sweep import Capacity

PACKAGES = ("uvicorn", "openai", "aiohttp", "fastapi", "sse-starlette")


def _ms(seconds: float, *, signed: bool = False) -> str:
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "not closed"
    value = seconds * 1000
    if abs(value) >= 1000:
        text = f"{value / 1000:+.1f} s" if signed else f"{value / 1000:.1f} s"
        return text
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _share(share: float) -> str:
    """A share rounded down, so that 99.96 % never reads as everything."""
    if math.isnan(share):
        return "-"
    return f"{math.floor(share * 1000) / 10:.1f}%"


def _disconnect(summary: Summary) -> str:
    if not summary.leavers:
        return "-"
    text = f"{_ms(summary.disconnect_p50)} / {_ms(summary.disconnect_p99)}"
    if summary.ran_to_end:
        text += f" ({summary.ran_to_end} of {summary.leavers} ran to the end)"
    if summary.still_open:
        text += f" ({summary.still_open} of {summary.leavers} open after {SETTLE_SECONDS:.0f} s)"
    return text


def _errors(summary: Summary) -> str:
    return ", ".join(f"{count} x {error}" for error, count in sorted(summary.errors.items()))


def table(summaries: Sequence[Summary], direct: dict[int, Summary]) -> str:
    """One row per target and concurrency; TTFT added over calling the upstream directly."""
    lines = [
        "| target | streams open | added TTFT p50 / p99 (ms) | token gap p99 (ms) "
        "| delivered | CPU ms per 1k tokens | KiB per open stream "
        "| disconnect → upstream closed p50 / p99 (ms) | load core busy | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for summary in summaries:
        baseline = direct.get(summary.concurrency)
        if summary.target == "direct" or baseline is None:
            ttft = f"({_ms(summary.ttft_p50)} / {_ms(summary.ttft_p99)})"
        else:
            ttft = (
                f"{_ms(summary.ttft_p50 - baseline.ttft_p50, signed=True)} / "
                f"{_ms(summary.ttft_p99 - baseline.ttft_p99, signed=True)}"
            )
        cpu = "-" if summary.cpu_per_1k_tokens is None else f"{summary.cpu_per_1k_tokens:.0f}"
        memory = (
            "-" if summary.memory_per_stream is None else f"{summary.memory_per_stream / 1024:.0f}"
        )
        delivered = _share(summary.delivered)
        lines.append(
            f"| {summary.target} | {summary.concurrency} | {ttft} | {_ms(summary.gap_p99)} "
            f"| {delivered} | {cpu} | {memory} | {_disconnect(summary)} "
            f"| {summary.load_busy:.0%} | {_errors(summary)} |"
        )
    return "\n".join(lines)


def gateway_table(summaries: Sequence[Summary], capacities: Sequence[Capacity]) -> str:
    """Per target: idle memory and the capacity sweep's result."""
    idle: dict[str, int] = {}
    for summary in summaries:
        if summary.rss_idle is not None:
            idle.setdefault(summary.target, summary.rss_idle)
    by_target = {capacity.target: capacity for capacity in capacities}
    lines = [
        "| target | idle RSS (MiB) | capacity on one core (tokens/s) | at streams open "
        "| stopped by |",
        "|---|--:|--:|--:|---|",
    ]
    for target in dict.fromkeys(summary.target for summary in summaries):
        if target == "direct":
            continue
        rss = f"{idle[target] / 2**20:.0f}" if target in idle else "-"
        capacity = by_target.get(target)
        if capacity is None:
            lines.append(f"| {target} | {rss} | - | - | not swept |")
        elif not capacity.concurrency:
            lines.append(f"| {target} | {rss} | none | - | {capacity.stopped_by} |")
        else:
            lines.append(
                f"| {target} | {rss} | {capacity.tokens_per_second:,.0f} "
                f"| {capacity.concurrency} | {capacity.stopped_by} |"
            )
    return "\n".join(lines)


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "CPU": model,
        "kernel": platform.release(),
        "load average (1, 5, 15 min)": load,
    }


def versions(litellm_python: Path | None) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    if litellm_python is not None:
        # LiteLLM lives in its own virtual environment, with the older openai it pins.
        script = (
            "import importlib.metadata as m; "
            "print(m.version('litellm'), m.version('openai'), m.version('uvicorn'))"
        )
        output = subprocess.run(
            [str(litellm_python), "-c", script], capture_output=True, text=True, check=True
        ).stdout.split()
        found["litellm"] = f"{output[0]} (with openai {output[1]}, uvicorn {output[2]})"
    return found


def render(
    *,
    command: str,
    settings: str,
    summaries: Sequence[Summary],
    sweep: Sequence[Summary],
    capacities: Sequence[Capacity],
    notes: Sequence[str],
    machine_before: dict[str, str],
    machine_after: dict[str, str],
    found_versions: dict[str, str],
    plot: str | None,
) -> str:
    direct = {s.concurrency: s for s in summaries if s.target == "direct"}
    parts = [
        "# Side by side: the service, LiteLLM, a tutorial relay and the floor",
        "",
        f"`{command}`: {settings}",
        "",
        table(summaries, direct),
        "",
        gateway_table(summaries, capacities),
        "",
    ]
    if sweep:
        swept_direct = {s.concurrency: s for s in sweep if s.target == "direct"}
        parts += [
            "Capacity sweep (no leavers; a target stops at the first level it fails twice):",
            "",
            table(sweep, swept_direct),
            "",
        ]
    if plot:
        parts += [f"![TTFT p99 and CPU per token against streams open]({plot})", ""]
    parts += [f"- {note}" for note in notes]
    parts += ["", "Machine:", ""]
    for name, value in machine_before.items():
        after = machine_after.get(name)
        shown = value if after in (None, value) else f"{value} at the start, {after} at the end"
        parts.append(f"- {name}: {shown}")
    parts += ["", "Versions:", ""]
    parts += [f"- {name} {version}" for name, version in found_versions.items()]
    return "\n".join(parts) + "\n"
