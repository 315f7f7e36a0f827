"""Loopback ports: a free one to listen on, and waiting until a server listens on one or has
stopped listening."""

from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from testkit.waiting import wait_until

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago (another process may still take it before use)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def port_of(url: str) -> int:
    """The port of an `http://host:port` URL (which must name it)."""
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url!r}")
    return port


def accepts_connections(port: int) -> bool:
    """Whether something listens on `port` now. The probe connection is closed at once without
    sending anything."""
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def wait_until_listening(
    port: int, timeout: float, alive: Callable[[], bool] = lambda: True
) -> bool:
    """True once `port` accepts connections; False after `timeout`, or as soon as `alive()`
    says that the server which should listen there has died."""
    listening = False

    def ready() -> bool:
        nonlocal listening
        listening = accepts_connections(port)
        return listening or not alive()

    wait_until(ready, timeout)
    return listening


def wait_until_refusing(port: int, timeout: float) -> bool:
    """True once nothing listens on `port` any more (a server closed its listening socket)."""
    return wait_until(lambda: not accepts_connections(port), timeout)
