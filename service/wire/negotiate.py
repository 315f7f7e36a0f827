"""Which wire format a request gets: the `format` parameter, else the `Accept` header.

`Accept` is read as RFC 9110 section 12.5.1 describes: media ranges with optional `q` weights,
the most specific range deciding each type's weight. Among the supported types the highest
weight wins, ties going to the order below (SSE first); no header, or `*/*`, means SSE. When
every supported type has weight 0 the answer is 406, naming what is supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from service.errors import NotAcceptable
from service.wire import ndjson, sse, text
from service.wire.base import Encoder

FormatName = Literal["sse", "ndjson", "text"]

MEDIA_TYPES: dict[FormatName, str] = {
    "sse": sse.MEDIA_TYPE,
    "ndjson": ndjson.MEDIA_TYPE,
    "text": text.MEDIA_TYPE,
}


def _weights(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for item in accept.split(","):
        media_range, *parameters = (part.strip() for part in item.split(";"))
        if not media_range:
            continue
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = min(1.0, max(0.0, float(value)))
                except ValueError:
                    weight = 0.0
        ranges.append((media_range.lower(), weight))
    return ranges


def _weight_of(media_type: str, ranges: list[tuple[str, float]]) -> float:
    main_type = media_type.split("/")[0]
    best_specificity, best_weight = -1, 0.0
    for media_range, weight in ranges:
        if media_range == media_type:
            specificity = 2
        elif media_range == f"{main_type}/*":
            specificity = 1
        elif media_range == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, best_weight = specificity, weight
    return best_weight


def choose_format(format_name: FormatName | None, accept: str | None) -> FormatName:
    if format_name is not None:
        return format_name
    if not accept or not accept.strip():
        return "sse"
    ranges = _weights(accept)
    weighted = [(_weight_of(media_type, ranges), name) for name, media_type in MEDIA_TYPES.items()]
    best_weight = max(weight for weight, _ in weighted)
    if best_weight <= 0:
        raise NotAcceptable(
            "none of the requested types can be produced; supported: "
            + ", ".join(MEDIA_TYPES.values())
            + " (or the format parameter: sse, ndjson, text)"
        )
    return next(name for weight, name in weighted if weight == best_weight)


def encoder_factory(
    name: FormatName, *, sse_retry_ms: int, ndjson_heartbeat: bool
) -> Callable[[str], Encoder]:
    """A function from stream id to a fresh encoder for that stream."""
    if name == "sse":
        return lambda stream_id: sse.SSEEncoder(stream_id, retry_ms=sse_retry_ms)
    if name == "ndjson":
        return lambda _stream_id: ndjson.NDJSONEncoder(heartbeat=ndjson_heartbeat)
    return lambda _stream_id: text.TextEncoder()
