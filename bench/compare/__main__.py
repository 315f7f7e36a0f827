"""`python -m bench.compare [--quick]`: the side-by-side benchmark (`make bench-compare`).

Prints the Markdown report and writes it, with the plot, to `<output>.md` and `<output>.png`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from bench.compare.plan import FULL, QUICK
from bench.compare.report import machine, render, versions
from bench.compare.run import Cores, Profiling, compare
from bench.compare.targets import TARGETS


def _stop(signal_number: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signal_number)  # unwinds through the `finally` that stops processes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, no sweep (~2 min)")
    parser.add_argument(
        "--targets",
        help="comma-separated target names (default: all): "
        + ", ".join(target.name for target in TARGETS[1:]),
    )
    parser.add_argument("--litellm", type=Path, help="the `litellm` command from its venv")
    parser.add_argument("--output", type=Path, help="report path without suffix")
    parser.add_argument("--gateway-cpu", type=int, help="core for gateways (default: last)")
    parser.add_argument("--load-cpu", type=int, help="core for upstream and client (first)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib)")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="STREAMS",
        help="record py-spy profiles of the gateways at this level (e.g. 100)",
    )
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    targets = TARGETS
    if args.targets:
        wanted = set(args.targets.split(","))
        targets = [t for t in TARGETS if t.name in wanted or t.gateway is None]
    litellm = args.litellm if args.litellm and args.litellm.exists() else None
    output = args.output or Path("bench/compare-quick" if args.quick else "bench/compare")
    signal.signal(signal.SIGTERM, _stop)

    before = machine()
    profiling = Profiling(args.profile, Path(f"{output}-profile")) if args.profile else None
    outcome = compare(
        plan,
        targets,
        cores=Cores.pick(args.gateway_cpu, args.load_cpu),
        litellm=litellm,
        profiling=profiling,
    )
    after = machine()
    if args.litellm and litellm is None:
        outcome.notes.append(f"litellm skipped: {args.litellm} does not exist")
    plot_path = None
    if not args.no_plot:
        from bench.compare.plot import plot  # matplotlib only when drawing

        plot_path = output.with_suffix(".png")
        rate = 1 / plan.pause_seconds
        title = f"{plan.answer_tokens} tokens per answer at {rate:.0f} tokens/s"
        title += ", each gateway on one core"
        plot(outcome.summaries + outcome.sweep, plot_path, title)
    command = "python -m bench.compare" + (" --quick" if args.quick else "")
    report = render(
        command=command,
        settings=plan.describe(),
        summaries=outcome.summaries,
        sweep=outcome.sweep,
        capacities=outcome.capacities,
        notes=outcome.notes,
        machine_before=before,
        machine_after=after,
        found_versions=versions(litellm.parent / "python" if litellm else None),
        plot=plot_path.name if plot_path else None,
    )
    output.with_suffix(".md").write_text(report)
    for profile in outcome.profiles:
        print(profile.read_text())
    print()
    print(report)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
