"""Word chunking (`chunking=word`): re-cut text deltas on word boundaries for UIs that render
word by word. The default passes tokens through untouched.

A boundary is after whitespace, or after a wide (CJK) character, which is a word of its own in
scripts written without spaces, unless a joiner or combining mark follows it (an emoji sequence
or an accented character stays whole; a wide character at the end of the buffer waits for the
next text to know). Text is Python `str`, so a multi-byte UTF-8 character is never split. The
tail is flushed before the stream's last event.
"""

from __future__ import annotations

import re
import unicodedata

from service.events import ResponseBatch, TextDelta

_ZERO_WIDTH_JOINER = "\u200d"
# A "word" longer than this is cut anyway, so text without spaces still streams and the buffer
# (and the boundary search) stays small.
MAX_PENDING_CHARS = 200
# A forced cut steps back over at most this many joiners and combining marks to keep a
# character whole; a longer stack of marks (zalgo text) is cut, so the step stays cheap.
_MAX_MARKS_KEPT = 32
# Where a boundary may be: after whitespace, or after a character that may be wide (every wide
# or fullwidth character is at U+1100 or above). Found by `re`, in C: a run of 3 MB without a
# candidate costs one scan per window instead of a Python step per character (issue #11).
_CANDIDATE = re.compile(r"[\s\u1100-\U0010ffff]")


def _continues(char: str) -> bool:
    """Whether `char` belongs to the character before it (joiner, combining mark, selector)."""
    return char == _ZERO_WIDTH_JOINER or unicodedata.category(char) in ("Mn", "Me", "Mc")


def _last_boundary(text: str, start: int, end: int) -> int:
    """The largest cut in `(start, end]` that falls on a word boundary, or 0. The window is
    searched from its end (reversed, so that `re` finds the last candidate first)."""
    for match in _CANDIDATE.finditer(text[start:end][::-1]):
        index = end - 1 - match.start()
        char = text[index]
        if char.isspace():
            return index + 1
        following = index + 1
        if (
            following < len(text)
            and not _continues(text[following])
            and unicodedata.east_asian_width(char) in ("W", "F")
        ):
            return following
    return 0


def word_boundary(text: str, start: int = 0) -> int:
    """The length of the longest prefix of `text` that ends on a word boundary at or after
    `start` (0 if none)."""
    return _last_boundary(text, start, len(text))


def _forced_cut(text: str, start: int, end: int) -> int:
    """Where to cut `text[start:end]`, a run with no word boundary (base64, a long URL): at
    `end`, or a little before it so as not to split a character from its marks."""
    cut = end
    while cut > start + 1 and end - cut < _MAX_MARKS_KEPT and _continues(text[cut]):
        cut -= 1
    return cut if not _continues(text[cut]) else end


def _cuts(text: str, searched: int) -> tuple[list[str], int]:
    """The pieces of `text` that can go now, each at most MAX_PENDING_CHARS long, and where the
    rest (shorter than that) starts. `searched`: the text before it holds no boundary (it was
    searched when it arrived), so each character is searched about once."""
    pieces: list[str] = []
    position = 0
    while len(text) - position > MAX_PENDING_CHARS:
        end = position + MAX_PENDING_CHARS
        cut = _last_boundary(text, max(position, searched), end)
        if not cut:
            cut = _forced_cut(text, position, end)
        pieces.append(text[position:cut])
        position = cut
    cut = _last_boundary(text, max(position, searched), len(text))
    if cut:
        pieces.append(text[position:cut])
        position = cut
    return pieces, position


class WordRechunker:
    """Re-cuts the text deltas of one stream's batches on word boundaries (module docstring);
    every other event passes as it is, after the text held back before it."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = ""

    def cut(self, batch: ResponseBatch) -> ResponseBatch:
        """`batch` re-cut; possibly empty (text held back until its boundary comes)."""
        pending = self._pending
        out: ResponseBatch = []
        for event in batch:
            if isinstance(event, TextDelta):
                # Only the new text (and the character before it, whose boundary depended on
                # what came next) can hold a new boundary: the search stays linear overall.
                searched = max(0, len(pending) - 1)
                text = pending + event.text
                pieces, rest = _cuts(text, searched)
                out += [TextDelta(piece) for piece in pieces]
                pending = text[rest:]
                continue
            if pending:
                out.append(TextDelta(pending))
                pending = ""
            out.append(event)
        self._pending = pending
        return out
