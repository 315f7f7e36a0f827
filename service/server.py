"""How `python -m service` runs the app: uvicorn with uvloop and the guarded httptools protocol.

One place for the server's configuration, so the tests serve the app exactly as it ships: the
connection limits of `service.http.server_protocol`, and uvicorn's access log off (it writes
query strings, which may hold a prompt; `service.http.access_log` writes the service's own).
"""

from __future__ import annotations

from typing import Any

import uvicorn

from service.http.server_protocol import ConnectionLimits, guarded_protocol
from service.settings import Settings


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_head_bytes=settings.max_request_head_bytes,
        head_timeout_seconds=settings.request_head_timeout_seconds,
        body_timeout_seconds=settings.request_body_timeout_seconds,
    )


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app`; `overrides` are `uvicorn.Config` arguments."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": guarded_protocol(connection_limits(settings)),
        "access_log": False,
        "log_level": settings.log_level,
        # A backstop only: streams end themselves when the grace period runs out.
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds) + 5,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
