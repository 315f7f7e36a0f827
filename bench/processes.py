"""The processes benchmarks start: the service under test, and reading its CPU time.

Each benchmark runs the fake upstream (`bench.upstream_server`), the service and its clients as
separate processes, so a figure read from /proc belongs to one of them only. Starting and
stopping the service is `testkit.service_process`, which the tests use too.
"""

from __future__ import annotations

import os

from bench.upstream_server import UpstreamProcess
from testkit.ports import port_of
from testkit.service_process import start_service_process, stop_process

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServiceProcess:
    """The service in its own process: `python -m service`, or uvicorn with `--http h11`."""

    def __init__(self, upstream: UpstreamProcess, http: str = "httptools") -> None:
        self.process, base_url = start_service_process(
            http=http,
            capture=False,
            OPENAI_API_KEY="bench",
            OPENAI_BASE_URL=upstream.base_url,
            LOG_LEVEL="warning",
            UPSTREAM_MAX_RETRIES="0",
        )
        self.port = port_of(base_url)

    def stop(self) -> None:
        stop_process(self.process)

    def cpu(self) -> float:
        return process_cpu_seconds(self.process.pid)
