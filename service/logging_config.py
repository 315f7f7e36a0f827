"""Log records as one JSON object per line (what log shippers and `jq` read).

A stream writes two lines at `info` (its summary, `service.metrics`, and the access log,
`service.http.access_log`): a tenth of a request's CPU with the standard library's defaults
(issue #16, bench/RESULTS.md). So the JSON is encoded by msgspec (the standard library's `json`
only for what msgspec refuses), the time is formatted once per second, and the record skips what
no line here shows, as the logging HOWTO's "Optimization" section describes: the caller's file
and line (`logging._srcfile`), the thread, process and multiprocessing process names.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import msgspec

_encode = msgspec.json.Encoder(enc_hook=str).encode


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._time = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._formatted_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("stream", "fields"):  # a stream summary, or any other structured fields
            extra = getattr(record, name, None)
            if isinstance(extra, dict):
                entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return _encode(entry).decode()
        except (TypeError, msgspec.EncodeError, OverflowError):
            return json.dumps(entry, default=str)  # what msgspec refuses: a huge int, say

    def _formatted_time(self, created: float) -> str:
        """`created` as local ISO 8601 to the second, formatted once per second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._time = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._time


def configure_logging(level: str) -> None:
    """The `service` loggers write JSON lines to stderr; uvicorn keeps its own format (which
    shows none of the record fields left out below either)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger("service")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging._srcfile = None  # the HOWTO's documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
