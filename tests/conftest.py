"""Shared fixtures: the fake upstream, the service in a real uvicorn on a loopback port, nginx
in front of it, and chromium. The parts themselves live in `testkit`, which benchmarks use too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Error, Page, sync_playwright

from testkit.browser import PAGE_TIMEOUT_MS, launch_chromium
from testkit.fake_upstream import FakeUpstream
from testkit.nginx import NginxFactory, NginxProxy
from testkit.redis_server import RedisServer
from testkit.service_process import is_service_variable
from testkit.services import (
    TEST_KEY,
    RunningService,
    ServiceFactory,
    make_settings,
    start_service,
    stop_service,
)

# Fixtures that start a server, in a thread or a process. A test using any of them (directly or
# through another fixture) is marked `server`, and `make check` leaves it out; a test that
# starts one by itself carries the mark in its module.
SERVER_FIXTURES = frozenset(
    {
        "upstream",
        "service",
        "service_factory",
        "upstream_service",
        "nginx_factory",
        "redis_server",
        "browser",
        "page",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set configuration explicitly; nothing leaks in from the developer's shell."""
    for name in list(os.environ):
        if is_service_variable(name):
            monkeypatch.delenv(name)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream_http_client() -> str:
    """The SDK transport; modules about transport behaviour override this to run both."""
    return "builtin"


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
def upstream_service(service_factory: ServiceFactory, upstream: FakeUpstream) -> ServiceFactory:
    """Start services pointed at the fake upstream with the OpenAI provider, no SDK retries,
    and these settings."""

    def start(**overrides: Any) -> RunningService:
        settings = {"openai_api_key": TEST_KEY, "upstream_max_retries": 0, **overrides}
        return service_factory(openai_base_url=upstream.base_url + "/v1", **settings)

    return start


@pytest.fixture
def service(upstream_service: ServiceFactory) -> RunningService:
    """The service pointed at the fake upstream with the OpenAI provider, no SDK retries."""
    return upstream_service()


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[NginxFactory]:
    """`start(backend_port, location_extra="", locations=None) -> base_url` of an nginx in front
    of it (stock unless `locations` says otherwise; see `testkit.nginx`).

    Every nginx started is stopped at the end of the test; its files live in the test's
    `tmp_path`. The test errors (not skips) if nginx is missing: scripts/install-system-deps.sh
    installs it.
    """
    started: list[NginxProxy] = []

    def start(backend_port: int, location_extra: str = "", locations: str | None = None) -> str:
        directory = tmp_path / f"nginx{len(started)}"
        proxy = NginxProxy.start(
            backend_port, location_extra=location_extra, locations=locations, directory=directory
        )
        started.append(proxy)
        return proxy.base_url

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test, stopped at its end (an error if it is missing:
    scripts/install-system-deps.sh installs it)."""
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, started once per module."""
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context (no shared cookies, cache or storage). An exception the page's
    script did not catch fails the test, even if the UI looked right."""
    context = browser.new_context(viewport={"width": 960, "height": 720})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    uncaught: list[Error] = []
    try:
        opened = context.new_page()
        opened.on("pageerror", lambda error: uncaught.append(error))
        yield opened
    finally:
        context.close()
    assert not uncaught, f"uncaught errors in the page: {[str(e) for e in uncaught]}"
