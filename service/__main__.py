"""`python -m service`: validate the configuration, then serve with uvicorn (`service.server`)."""

from __future__ import annotations

import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.logging_config import configure_logging
from service.runtime import runtime_of
from service.server import uvicorn_config
from service.settings import Settings
from service.shutdown import ShutdownCoordinator


def describe_configuration_error(error: ValidationError) -> str:
    """Name each bad variable; never print a value (it may be a key)."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        variable = ".".join(str(part) for part in problem["loc"]).upper()
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}" if variable else f"  {message}")
    return "configuration error:\n" + "\n".join(lines)


class GracefulServer(uvicorn.Server):
    """uvicorn, telling the app when SIGTERM/SIGINT arrives so it can drain (service.shutdown)."""

    def __init__(self, config: uvicorn.Config, on_exit: ShutdownCoordinator) -> None:
        super().__init__(config)
        self._shutdown = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._shutdown.begin()
        super().handle_exit(sig, frame)


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_configuration_error(error), file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    app = create_app(settings)
    GracefulServer(uvicorn_config(app, settings), runtime_of(app).shutdown).run()


if __name__ == "__main__":
    main()
