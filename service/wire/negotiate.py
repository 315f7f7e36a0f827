"""Which wire format a request gets: the `format` parameter, else the `Accept` header.

`Accept` is read as RFC 9110 section 12.5.1 describes: media ranges with optional `q` weights,
the most specific range deciding each type's weight. Among the registered formats
(`service.wire.formats`) the highest weight wins, ties going to the registry's order (SSE
first); no header, or `*/*`, means the default. When every format has weight 0 the answer is
406, naming what is supported.
"""

from __future__ import annotations

from service.errors import InvalidRequest, NotAcceptable
from service.wire.formats import DEFAULT, FORMATS, first_per_media_type

_NEGOTIABLE = first_per_media_type()


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


def choose_format(format_name: str | None, accept: str | None) -> str:
    """The registered format's name; `InvalidRequest` for an unknown `format`, `NotAcceptable`
    when `Accept` rules out every format."""
    if format_name is not None:
        if format_name not in FORMATS:
            raise InvalidRequest(
                f"format: must be one of {', '.join(FORMATS)}; got {format_name[:40]!r}"
            )
        return format_name
    if not accept or not accept.strip():
        return DEFAULT
    ranges = _weights(accept)
    weighted = [(_weight_of(media, ranges), entry.name) for media, entry in _NEGOTIABLE.items()]
    best_weight = max(weight for weight, _ in weighted)
    if best_weight <= 0:
        raise NotAcceptable(
            "none of the requested types can be produced; supported: "
            + ", ".join(_NEGOTIABLE)
            + f" (or the format parameter: {', '.join(FORMATS)})"
        )
    return next(name for weight, name in weighted if weight == best_weight)
