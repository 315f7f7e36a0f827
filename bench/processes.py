"""The processes benchmarks start: the service under test, and reading its CPU time.

Each benchmark runs the fake upstream (`bench.upstream_server`), the service and its clients as
separate processes, so a figure read from /proc belongs to one of them only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from bench.upstream_server import UpstreamProcess
from tests.conftest import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServiceProcess:
    """The service in its own process: `python -m service`, or uvicorn with `--http h11`."""

    def __init__(
        self, upstream: UpstreamProcess, http: str = "httptools", **extra_environment: str
    ) -> None:
        self.port = free_port()
        environment = {
            **os.environ,
            **extra_environment,
            "OPENAI_API_KEY": "bench",
            "OPENAI_BASE_URL": upstream.base_url,
            "PORT": str(self.port),
            "LOG_LEVEL": "warning",
            "UPSTREAM_MAX_RETRIES": "0",
        }
        command = [sys.executable, "-m", "service"]
        if http == "h11":
            command = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--http", "h11"]
            command += ["--loop", "uvloop", "--host", "127.0.0.1", "--port", str(self.port)]
            command += ["--log-level", "warning"]
        self.process = subprocess.Popen(command, env=environment)
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("service did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def cpu(self) -> float:
        return process_cpu_seconds(self.process.pid)
