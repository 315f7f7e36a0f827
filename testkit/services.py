"""The app in a real uvicorn server in this process: a thread with its own event loop, on a free
loopback port, so tests see real sockets, real disconnects and real timing (httpx's
ASGITransport buffers whole responses), and can still read the service's log records.

`start_service(settings)` returns a `RunningService`; `stop_service` stops it. The service as a
separate process is `testkit.service_process`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.runtime import runtime_of
from service.server import uvicorn_config
from service.settings import Settings
from testkit.waiting import wait_until

# The upstream API key that services under test are given. Secret-shaped, so that a test can
# look for it anywhere it must not appear.
TEST_KEY = "sk-test-SECRET-4b1d9f0c2e7a"
STREAM_LOGGER = "service.streams"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0


def make_settings(**overrides: Any) -> Settings:
    """Settings from `overrides` and the environment only, never from a `.env` file."""
    return Settings(_env_file=None, **overrides)


class StreamLog(logging.Handler):
    """Collects the per-stream summaries the service logs (logger `service.streams`)."""

    def __init__(self) -> None:
        super().__init__()
        self.summaries: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        summary = getattr(record, "stream", None)
        if isinstance(summary, dict):
            self.summaries.append(summary)


@dataclass
class RunningService:
    base_url: str
    settings: Settings
    log: StreamLog
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.base_url.removeprefix("http://").split(":")
        return host, int(port)

    def begin_shutdown(self) -> None:
        """What SIGTERM does to `python -m service`: the service is draining on return."""
        app = self._server.config.app
        assert isinstance(app, FastAPI)
        runtime_of(app).shutdown.begin()  # safe from any thread

    def wait_for_summaries(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The stream summaries logged so far, once there are `count` (or after `timeout`)."""
        wait_until(lambda: len(self.log.summaries) >= count, timeout)
        return self.log.summaries


def start_service(settings: Settings, http: str = "httptools") -> RunningService:
    """The app in a real uvicorn on a free loopback port, in a thread with its own loop, served
    as `python -m service` serves it (`service.server`). `http` is uvicorn's protocol
    implementation (the service ships with httptools, guarded by
    `service.http.server_protocol`)."""
    config = uvicorn_config(
        create_app(settings),
        settings,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        **({} if http == "httptools" else {"http": http}),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="service", daemon=True)
    thread.start()
    if not wait_until(lambda: server.started or not thread.is_alive(), START_TIMEOUT_SECONDS):
        server.should_exit = True
        raise RuntimeError("service did not start")
    if not server.started:
        raise RuntimeError("service did not start: its thread ended")
    port = server.servers[0].sockets[0].getsockname()[1]
    log = StreamLog()
    logging.getLogger(STREAM_LOGGER).addHandler(log)
    logging.getLogger(STREAM_LOGGER).setLevel(logging.INFO)
    return RunningService(f"http://127.0.0.1:{port}", settings, log, server, thread)


def stop_service(service: RunningService) -> None:
    service._server.should_exit = True
    service._thread.join(STOP_TIMEOUT_SECONDS)
    logging.getLogger(STREAM_LOGGER).removeHandler(service.log)


# `start(**settings) -> RunningService`: the shape of the tests' `service_factory` fixture.
ServiceFactory = Callable[..., RunningService]
