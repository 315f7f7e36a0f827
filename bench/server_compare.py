"""The service under uvicorn (as `python -m service` serves it) against granian, measured on the
service itself (issue #16).

    python -m bench.server_compare [--rounds N]

The same app factory (`service.workers:create_served_app`) behind each server, the same paced
upstream (`bench.paced_upstream`, 200 tokens at 100 tokens/s) and load: 100 streams started
over two seconds, three rounds, then 1-token answers one after another. Each server's process
tree is pinned to the last core, the upstream and the clients to the first; CPU is read from
/proc (user and system) for the whole tree, since granian serves from a child process. The
servers take turns, `--rounds` times, and each figure is the median of its turns.

Granian is in the bench extra; uvicorn stays the server (docs/performance.md): the two cost
the same here, within the machine's noise (bench/RESULTS.md), and `python -m service` relies on
uvicorn's protocol for the connection limits granian does not have
(`service.http.server_protocol`: the body's time, resetting a response left incomplete, JSON
refusals, the direct body send).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import uvloop

from bench.processes import ListeningProcess, process_tree
from bench.relay_overhead import NATIVE, Route, stream_once
from bench.upstream_server import UpstreamProcess
from testkit.ports import free_port
from testkit.service_process import service_env

ROUTE = Route(NATIVE.name, NATIVE.path, b"Zq", NATIVE.body)  # the paced upstream's tokens
TOKENS = 200
TICKS = os.sysconf("SC_CLK_TCK")
FACTORY = "service.workers:create_served_app"


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of `pid` and its descendants."""
    user = system = 0.0
    for process in process_tree(pid):
        try:
            with open(f"/proc/{process}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / TICKS
        system += int(fields[12]) / TICKS
    return user, system


def uvicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "service"]


def granian_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
        "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", FACTORY,
    ]  # fmt: skip


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn (python -m service)": uvicorn_command,
    "granian": granian_command,
}


@dataclass
class Figures:
    streamed_ms_per_1k: list[float]
    request_ms: list[float]


async def streamed(port: int, streams: int) -> None:
    async def one(index: int) -> None:
        await asyncio.sleep(index * 2.0 / streams)  # arrivals spread over one answer
        _, found = await stream_once(port, ROUTE)
        assert found == TOKENS, found

    await asyncio.gather(*(one(index) for index in range(streams)))


async def measure(name: str, command: Callable[[int], list[str]], figures: Figures) -> None:
    gateway_core = max(os.sched_getaffinity(0))
    for requests, pause in ((None, 0.01), (300, 0.0)):
        upstream = UpstreamProcess(TOKENS if requests is None else 1, pause, paced=True)
        port = free_port()
        environment = service_env(
            OPENAI_API_KEY="bench",
            OPENAI_BASE_URL=upstream.base_url,
            PORT=str(port),
            MAX_CONCURRENT_STREAMS="100000",
            LOG_LEVEL="warning",
        )
        server = ListeningProcess(command(port), port, env=environment, cpus={gateway_core})
        try:
            for _ in range(5):
                await stream_once(port, ROUTE)  # warm up
            before = tree_cpu_seconds(server.process.pid)
            if requests is None:
                for _ in range(3):
                    await streamed(port, 100)
                done = 3 * 100 * TOKENS / 1000
            else:
                for _ in range(requests):
                    await stream_once(port, ROUTE)
                done = requests
            after = tree_cpu_seconds(server.process.pid)
            used = (after[0] - before[0]) + (after[1] - before[1])
            if requests is None:
                figures.streamed_ms_per_1k.append(used / done * 1000)
            else:
                figures.request_ms.append(used / done * 1000)
        finally:
            server.stop()
            upstream.stop()
    print(f"  {name}: measured", flush=True)


async def main(rounds: int) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    try:
        import granian  # noqa: F401
    except ImportError:
        print("granian is not installed (pip install -e '.[bench]'): uvicorn alone")
        del SERVERS["granian"]
    results = {name: Figures([], []) for name in SERVERS}
    for _ in range(rounds):
        for name, command in SERVERS.items():
            await measure(name, command, results[name])
    print(f"\n100 streams x {TOKENS} tokens at 100 tokens/s, 3 rounds; 300 1-token answers")
    print(f"(median of {rounds} turns each, the server's process tree on one core)\n")
    print("| server | CPU ms per 1k tokens streamed | CPU ms per request |")
    print("|---|--:|--:|")
    for name, figures in results.items():
        print(
            f"| {name} | {statistics.median(figures.streamed_ms_per_1k):.1f} | "
            f"{statistics.median(figures.request_ms):.2f} |"
        )


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server_compare", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main(parser.parse_args().rounds))


if __name__ == "__main__":
    run()
