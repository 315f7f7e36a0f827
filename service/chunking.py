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


def _continues(char: str) -> bool:
    """Whether `char` belongs to the character before it (joiner, combining mark, selector)."""
    return char == _ZERO_WIDTH_JOINER or unicodedata.category(char) in ("Mn", "Me", "Mc")


def word_boundary(text: str) -> int:
    """The length of the longest prefix of `text` that ends on a word boundary (0 if none)."""
    for index in range(len(text) - 1, -1, -1):
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


async def rechunk_words(
    events: AsyncGenerator[ResponseEvent, None],
) -> AsyncGenerator[ResponseEvent, None]:
    pending = ""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                pending += event.text
                cut = word_boundary(pending)
                if cut:
                    yield TextDelta(pending[:cut])
                    pending = pending[cut:]
                continue
            if pending:
                yield TextDelta(pending)
                pending = ""
            yield event
