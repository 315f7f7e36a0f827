"""How `python -m service` runs: one process, or `WORKERS` processes under uvicorn's supervisor.

uvicorn's supervisor binds the socket once and starts each worker as a fresh interpreter
(multiprocessing's `spawn`), which imports `create_served_app` by name and serves the shared
socket. SIGTERM (or SIGINT) to the supervisor is passed on to every worker as SIGTERM, and each
worker drains on its own (`service.shutdown`): the app chains its drain in front of the worker
server's handler, in every worker alike, which is also how a single process drains. The
supervisor here only adds one thing: it closes its own copy of the listening socket at the
signal, so that once the workers close theirs new connections are refused at once, as with one
process, instead of waiting in the listen queue until the supervisor exits.

Metrics under several workers use prometheus-client's multiprocess mode: every worker writes its
values to files in `PROMETHEUS_MULTIPROC_DIR` and `/metrics`, whichever worker answers it, sums
them (`service.prometheus_metrics`). The directory must be empty at each start and be set before
any worker imports prometheus-client, so `metrics_directory` makes a fresh one for every start
and removes it at exit: https://prometheus.github.io/client_python/multiprocess/
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from service.http.server_protocol import guarded_protocol
from service.logging_config import configure_logging
from service.server import connection_limits, uvicorn_config
from service.settings import Settings

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def create_served_app() -> FastAPI:
    """The app as `python -m service` serves it, in each worker: configured from the
    environment, draining on SIGTERM, its startup objects frozen (`create_app`)."""
    from service.app import create_app  # after `metrics_directory` set up the environment

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, drain_on_signals=True, freeze_after_startup=True)


@cache
def _protocol_class() -> type[asyncio.Protocol]:
    return guarded_protocol(connection_limits(Settings()))


def served_protocol(**arguments: Any) -> asyncio.Protocol:
    """The guarded httptools protocol (`service.server`) with this process's limits, for
    uvicorn by name: the configuration is sent to each spawned worker, and a class made at run
    time cannot be, while a name can."""
    return _protocol_class()(**arguments)


def serve(settings: Settings) -> None:
    """Serve until stopped: in this process, or in `settings.workers` worker processes."""
    config = uvicorn_config(
        # By name: each worker process imports and builds its own app.
        "service.workers:create_served_app",
        settings,
        factory=True,
        workers=settings.workers,
        http="service.workers:served_protocol",
    )
    with metrics_directory(config.workers):
        if config.workers == 1:
            uvicorn.Server(config).run()
        else:
            Supervisor(config, sockets=[config.bind_socket()]).run()


class Supervisor(Multiprocess):
    """uvicorn's supervisor, letting go of the listening socket when told to stop."""

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()


@contextmanager
def metrics_directory(workers: int) -> Iterator[str | None]:
    """With several workers, a fresh `PROMETHEUS_MULTIPROC_DIR` for this start (under
    `$TMPDIR`), removed afterwards; with one, none (values stay in memory). Either way an
    inherited `PROMETHEUS_MULTIPROC_DIR` is not used: its files may be a previous run's."""
    os.environ.pop(MULTIPROCESS_VARIABLE, None)
    if workers == 1:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="llm-stream-metrics-")
    os.environ[MULTIPROCESS_VARIABLE] = directory  # inherited by the workers
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROCESS_VARIABLE, None)
        shutil.rmtree(directory, ignore_errors=True)
