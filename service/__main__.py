"""`python -m service`: validate the configuration, then serve with uvicorn (uvloop, httptools),
in `WORKERS` processes (`service.workers`)."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from service.logging_config import configure_logging
from service.settings import Settings
from service.workers import serve


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
    serve(settings)


if __name__ == "__main__":
    main()
