"""The registry of wire formats, in order of preference (the first is the default and wins
ties in `Accept`). Adding a format is one encoder module exporting a `WireFormat` plus one entry
here; negotiation, the 406 message and the OpenAPI document follow (ARCHITECTURE.md)."""

from __future__ import annotations

from service.wire import ndjson, sse, text
from service.wire.base import WireFormat

FORMATS: dict[str, WireFormat] = {
    entry.name: entry
    for entry in (
        sse.FORMAT,
        ndjson.FORMAT,
        text.FORMAT,
    )
}
DEFAULT = next(iter(FORMATS))
