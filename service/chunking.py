"""Word chunking (`chunking=word`): re-cut text deltas on word boundaries for UIs that render
word by word. The default passes tokens through untouched.

A boundary is after whitespace, or after a wide (CJK) character, which is a word of its own in
scripts written without spaces, unless a joiner or combining mark follows it (an emoji sequence
or an accented character stays whole; a wide character at the end of the buffer waits for the
next text to know). Text is Python `str`, so a multi-byte UTF-8 character is never split. The
tail is flushed before the stream's last event.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.events import ResponseEvent, TextDelta

_ZERO_WIDTH_JOINER = "\u200d"
# A "word" longer than this is cut anyway, so text without spaces still streams and the buffer
# (and the boundary search) stays small.
MAX_PENDING_CHARS = 200


def _continues(char: str) -> bool:
    """Whether `char` belongs to the character before it (joiner, combining mark, selector)."""
    return char == _ZERO_WIDTH_JOINER or unicodedata.category(char) in ("Mn", "Me", "Mc")


def word_boundary(text: str, start: int = 0) -> int:
    """The length of the longest prefix of `text` that ends on a word boundary at or after
    `start` (0 if none)."""
    for index in range(len(text) - 1, start - 1, -1):
        char = text[index]
        if char.isspace():
            return index + 1
        following = text[index + 1] if index + 1 < len(text) else None
        if (
            following is not None
            and not _continues(following)
            and unicodedata.east_asian_width(char) in ("W", "F")
        ):
            return index + 1
    return 0


def _forced_cut(text: str) -> int:
    """Where to cut a run longer than MAX_PENDING_CHARS with no word boundary (base64, a long
    URL): as late as possible, but never before a joiner or combining mark."""
    for index in range(len(text) - 1, 0, -1):
        if not _continues(text[index]):
            return index
    return len(text)


async def rechunk_words(
    events: AsyncGenerator[ResponseEvent, None],
) -> AsyncGenerator[ResponseEvent, None]:
    pending = ""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                # Only the new text (and the character before it, whose boundary depended on
                # what came next) can hold a new boundary: the search stays linear overall.
                start = max(0, len(pending) - 1)
                pending += event.text
                cut = word_boundary(pending, start)
                if not cut and len(pending) > MAX_PENDING_CHARS:
                    cut = _forced_cut(pending)
                if cut:
                    yield TextDelta(pending[:cut])
                    pending = pending[cut:]
                continue
            if pending:
                yield TextDelta(pending)
                pending = ""
            yield event
    if pending:  # a stream that ended without a last event keeps its text too
        yield TextDelta(pending)
