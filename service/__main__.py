"""`python -m service`: validate the configuration, then serve with uvicorn (uvloop, httptools),
in `WORKERS` processes (`service.workers`)."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from service.logging_config import configure_logging
from service.settings import Settings
from service.workers import metrics_directory


def describe_configuration_error(error: ValidationError) -> str:
    """Name each bad variable; never print a value (it may be a key)."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        variable = ".".join(str(part) for part in problem["loc"]).upper()
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}" if variable else f"  {message}")
    return "configuration error:\n" + "\n".join(lines)


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_configuration_error(error), file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    with metrics_directory(settings.workers):
        uvicorn.run(
            # By name: each worker process imports and builds its own app.
            "service.workers:create_served_app",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            log_level=settings.log_level,
            # A backstop only: streams end themselves when the grace period runs out.
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
        )


if __name__ == "__main__":
    main()
