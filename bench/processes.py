"""The processes benchmarks start: servers under test, and reading their CPU time and memory.

Each benchmark runs the fake upstream (`bench.upstream_server`), the server under test and its
clients as separate processes, so a figure read from /proc belongs to one of them only. Starting
and stopping the service is `testkit.service_process`, which the tests use too; any other
server (and the service pinned to a core) is a `ListeningProcess`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench.upstream_server import UpstreamProcess
from testkit.ports import accepts_connections, port_of
from testkit.service_process import start_service_process, stop_process
from testkit.waiting import wait_until

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process (all its threads, ended ones too), to the nanosecond.

    Read from the process's CPU clock, the clock `clock_getcpuclockid(3)` returns; Python has
    no wrapper, so its id is built as the kernel encodes it (include/linux/posix-timers.h:
    `make_process_cpuclock(pid, CPUCLOCK_SCHED)` = `(~pid << 3) | 2`). /proc/<pid>/stat counts
    in 10 ms ticks, too coarse for a few hundred tokens; it remains the fallback.
    """
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a server may fork workers), from /proc children lists."""
    found = [pid]
    for process in found:
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                found += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue  # the thread or process ended while we looked
    return found


class ListeningProcess:
    """A server in its own process, ready once it accepts connections on `port`.

    `env` is its whole environment (default: this process's). `cpus` pins it (and every thread
    it will start) before it executes anything, so a measurement can give it one core; `log`
    receives its output. Stopped by its PID: SIGTERM, then SIGKILL.
    """

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        cpus: set[int] | None = None,
        log: Path | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.port = port
        self.log = log.open("wb") if log else None

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.process = subprocess.Popen(
            list(command),
            env=env,
            preexec_fn=pin if cpus else None,  # runs in the child before exec
            stdout=self.log,
            stderr=self.log,
            text=True,
        )
        wait_until(lambda: self.process.poll() is not None or accepts_connections(port), timeout)
        if self.process.poll() is None and accepts_connections(port):
            return
        self.stop()
        raise RuntimeError(
            f"{' '.join(command)} did not listen on {port} within {timeout} s"
            f" (exit status {self.process.returncode}; its output: {log})"
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Stop the server and any process it started, each by its PID."""
        if self.log:
            self.log.close()
        if self.process.poll() is not None:
            return
        children = process_tree(self.pid)[1:]
        stop_process(self.process)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def cpu(self) -> float:
        """CPU seconds used so far by the server and its descendants."""
        return sum(_or_zero(process_cpu_seconds, pid) for pid in process_tree(self.pid))

    def rss(self) -> int:
        """Resident bytes of the server and its descendants."""
        return int(sum(_or_zero(process_rss_bytes, pid) for pid in process_tree(self.pid)))


def _or_zero(read: Callable[[int], float], pid: int) -> float:
    try:
        return read(pid)
    except OSError:
        return 0.0  # ended between listing and reading


class ServiceProcess:
    """The service in its own process: `python -m service`, or uvicorn with `--http h11`."""

    def __init__(
        self, upstream: UpstreamProcess, http: str = "httptools", **extra_environment: str
    ) -> None:
        environment = {
            "OPENAI_API_KEY": "bench",
            "OPENAI_BASE_URL": upstream.base_url,
            "LOG_LEVEL": "warning",
            "UPSTREAM_MAX_RETRIES": "0",
            **extra_environment,
        }
        self.process, base_url = start_service_process(
            None, http=http, capture=False, **environment
        )
        self.port = port_of(base_url)

    def stop(self) -> None:
        stop_process(self.process)

    def cpu(self) -> float:
        return process_cpu_seconds(self.process.pid)
