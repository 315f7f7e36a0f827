"""Debian's redis-server as a child process on a loopback port, for tests and benchmarks.

`RedisServer.start(directory)` runs `/usr/bin/redis-server` in the foreground with everything
given on its command line (no config file, no persistence, 127.0.0.1 only) and returns once it
answers PING; `stop()` ends it by its PID. `kill()` (SIGKILL) and `start_again()` (the same
port) let a test take Redis away mid-stream and bring it back.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from testkit.ports import free_port
from testkit.waiting import wait_until

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_SECONDS = 10.0


class RedisServer:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path) -> RedisServer:
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError(f"{REDIS_SERVER} is missing: run scripts/install-system-deps.sh")
        directory.mkdir(parents=True, exist_ok=True)
        server = cls(directory, free_port())
        server.start_again()
        return server

    def start_again(self) -> None:
        """Start (or restart) the server on its port; returns once it answers PING."""
        log = self.directory / "redis.log"
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        process = self.process
        wait_until(
            lambda: process.poll() is not None or self.command("PING") == "+PONG",
            START_TIMEOUT_SECONDS,
        )
        if process.poll() is None and self.command("PING") == "+PONG":
            return
        self.stop()
        raise RuntimeError(f"redis-server did not start:\n{log.read_text(errors='replace')}")

    def command(self, *words: str) -> str:
        """One inline command (no spaces in its words); the first line of the reply, or "" if
        the server cannot be reached."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                connection.sendall(" ".join(words).encode() + b"\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                return reply.split(b"\r\n", 1)[0].decode()
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-conversation, as when its host dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
