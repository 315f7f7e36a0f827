"""The service as a child process, configured by its environment only, as it runs in deployment:
`python -m service` (or uvicorn's command line, to pick its HTTP implementation).

The environment it gets is this process's without any variable the service reads, plus what
the caller passes, so nothing leaks in from the developer's shell. The caller stops it, by PID
(`stop_process`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from service.settings import Settings
from testkit.ports import LOOPBACK, free_port
from testkit.waiting import wait_until

START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0

_PREFIXES = ("OPENAI_", "AZURE_OPENAI_")
_NAMES = {name.upper() for name in Settings.model_fields} | {"PROVIDER"}


def is_service_variable(name: str) -> bool:
    """Whether the service reads the environment variable `name` (a setting or a provider's)."""
    return name.startswith(_PREFIXES) or name in _NAMES


def service_env(**extra: str) -> dict[str, str]:
    """This process's environment without any variable the service reads, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not is_service_variable(name)}
    env.update(extra)
    return env


def run_service_until_exit(cwd: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m service` in `cwd`, expecting it to exit by itself (a refused
    configuration, for example) within 30 s; its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "service"],
        env=service_env(**environment),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start_service_process(
    cwd: Path | None = None, *, http: str = "httptools", capture: bool = True, **environment: str
) -> tuple[subprocess.Popen[str], str]:
    """The service in its own process, and its base URL once `/healthz` answers.

    With `http="httptools"` it is `python -m service`, as shipped; with another value, uvicorn's
    command line with that HTTP implementation (`h11`). With `capture`, its stdout and stderr
    are pipes for the caller to read (`communicate()` after stopping it); otherwise they are
    this process's. Raises `RuntimeError`, with the process's stderr when captured, if it exits
    or does not answer within `START_TIMEOUT_SECONDS`.
    """
    port = free_port()
    command = [sys.executable, "-m", "service"]
    if http != "httptools":
        command = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--http", http]
        command += ["--loop", "uvloop", "--host", LOOPBACK, "--port", str(port)]
        command += ["--log-level", environment.get("LOG_LEVEL", "info").lower()]
    output = subprocess.PIPE if capture else None
    process = subprocess.Popen(
        command,
        env=service_env(PORT=str(port), **environment),
        cwd=cwd,
        stdout=output,
        stderr=output,
        text=True,
    )
    base_url = f"http://{LOOPBACK}:{port}"
    wait_until(lambda: process.poll() is not None or _answers(base_url), START_TIMEOUT_SECONDS)
    if process.poll() is None and _answers(base_url):
        return process, base_url
    stop_process(process)
    _, stderr = process.communicate()
    raise RuntimeError(f"the service did not start: {' '.join(command)}\n{stderr or ''}")


def _answers(base_url: str) -> bool:
    try:
        httpx.get(base_url + "/healthz", timeout=2)
    except httpx.TransportError:
        return False
    return True


def stop_process(process: subprocess.Popen[str], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stop `process` by its PID: SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def stop_and_collect(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop a process started with `capture` (`stop_process`); its whole stdout and stderr."""
    stop_process(process)
    stdout, stderr = process.communicate()
    return stdout or "", stderr or ""


def json_log_lines(output: str) -> list[dict[str, Any]]:
    """The service's JSON log lines in a process's output (uvicorn's own lines are not JSON)."""
    entries = []
    for line in output.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def stream_outcomes(output: str) -> list[tuple[str | None, str | None]]:
    """(outcome, error type) of each stream summary line (`service.streams`) in `output`."""
    return [
        (entry.get("outcome"), entry.get("error_type"))
        for entry in json_log_lines(output)
        if entry.get("logger") == "service.streams"
    ]
