"""Shared fixtures: a fake upstream, and the service in a real uvicorn on a loopback port."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.runtime import runtime_of
from service.settings import Settings
from tests.fake_upstream import FakeUpstream

FIXTURES = Path(__file__).parent / "fixtures"
TEST_KEY = "sk-test-SECRET-4b1d9f0c2e7a"

_SERVICE_ENV_PREFIXES = ("OPENAI_", "AZURE_OPENAI_")
_SERVICE_ENV_NAMES = {name.upper() for name in Settings.model_fields} | {"PROVIDER"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set configuration explicitly; nothing leaks in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(_SERVICE_ENV_PREFIXES) or name in _SERVICE_ENV_NAMES:
            monkeypatch.delenv(name)


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


class StreamLog(logging.Handler):
    """Collects the per-stream summaries the service logs."""

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
        """What SIGTERM does to `python -m service`, on the server's own loop."""
        app: Any = self._server.config.app
        runtime_of(app).shutdown.begin()  # safe from any thread

    def wait_for_summaries(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.log.summaries) < count:
            time.sleep(0.005)
        return self.log.summaries


def start_service(settings: Settings, http: str = "httptools") -> RunningService:
    """The app in a real uvicorn on a free loopback port, in a thread with its own loop.
    `http` is uvicorn's protocol implementation (the service ships with httptools)."""
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=0,
        loop="uvloop",
        http=http,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("service did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    log = StreamLog()
    logging.getLogger("service.streams").addHandler(log)
    logging.getLogger("service.streams").setLevel(logging.INFO)
    return RunningService(f"http://127.0.0.1:{port}", settings, log, server, thread)


def stop_service(service: RunningService) -> None:
    service._server.should_exit = True
    service._thread.join(10)
    logging.getLogger("service.streams").removeHandler(service.log)


ServiceFactory = Callable[..., RunningService]


@pytest.fixture
def upstream_http_client() -> str:
    """The SDK transport; modules about transport behaviour override this to run both."""
    return "aiohttp"


@pytest.fixture
def service_factory(upstream_http_client: str) -> Iterator[ServiceFactory]:
    """Start services with explicit settings; all are stopped at the end of the test."""
    started: list[RunningService] = []

    def start(**overrides: Any) -> RunningService:
        overrides.setdefault("upstream_http_client", upstream_http_client)
        service = start_service(make_settings(**overrides))
        started.append(service)
        return service

    yield start
    for service in started:
        stop_service(service)


@pytest.fixture
def service(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    """The service pointed at the fake upstream with the OpenAI provider, no SDK retries."""
    running: RunningService = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url + "/v1",
        upstream_max_retries=0,
    )
    return running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(**extra: str) -> dict[str, str]:
    """This process's environment without any provider variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
    env.update(extra)
    return env


def start_service_process(cwd: Path, **environment: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m service` in its own process (configured by `environment` only, output
    captured), and its base URL once `/healthz` answers. The caller stops it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=service_env(PORT=str(port), **environment),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(base_url + "/healthz")
            return process, base_url
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                process.communicate()
                raise
            time.sleep(0.05)


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str

    def json(self) -> Any:
        return json.loads(self.data)


def read_events(response: httpx.Response) -> list[SSEEvent]:
    """Parse a whole SSE body with httpx-sse (a standard client-side parser)."""
    from httpx_sse import EventSource

    return [SSEEvent(e.event, e.data, e.id) for e in EventSource(response).iter_sse()]


def stream_chat(
    base_url: str, body: dict[str, Any], **kwargs: Any
) -> tuple[httpx.Response, list[SSEEvent]]:
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", base_url + "/api/chat/stream", json=body, **kwargs) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response, []
        return response, read_events(response)


def answer_text(events: list[SSEEvent]) -> str:
    return "".join(e.json()["content"] for e in events if e.data != "[DONE]")
