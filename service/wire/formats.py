"""The registry of wire formats, in order of preference (the first is the default and wins
ties in `Accept`). Adding a format is one encoder module exporting a `WireFormat` plus one entry
here; negotiation, the 406 message and the OpenAPI document follow (ARCHITECTURE.md).

Two formats may share a media type (the AI SDK's UI message stream is SSE too): `Accept` then
picks the first registered, and the other is reached by its `format` name."""

from __future__ import annotations

from service.wire import ndjson, sse, text, ui_message_stream
from service.wire.base import WireFormat

FORMATS: dict[str, WireFormat] = {
    entry.name: entry
    for entry in (
        sse.FORMAT,
        ndjson.FORMAT,
        text.FORMAT,
        ui_message_stream.FORMAT,
    )
}
DEFAULT = next(iter(FORMATS))


def first_per_media_type() -> dict[str, WireFormat]:
    """The formats `Accept` can choose between: the first registered for each media type."""
    chosen: dict[str, WireFormat] = {}
    for entry in FORMATS.values():
        chosen.setdefault(entry.media_type, entry)
    return chosen
