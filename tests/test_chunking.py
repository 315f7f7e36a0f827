"""Word chunking: same text, cut only on word boundaries, tail flushed before the end."""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.chunking import MAX_PENDING_CHARS, WordRechunker, word_boundary
from service.errors import UpstreamUnavailable
from service.events import (
    ResponseEvent,
    StreamEnded,
    StreamFailed,
    StreamMetrics,
    StreamStarted,
    TextDelta,
)


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        ("Hello wor", 6),
        ("Hello", 0),
        ("Hello\n", 6),
        ("a b c", 4),
        ("日本語", 2),  # the last character may still take a combining mark
        ("日本語です", 4),
        ("e\u0301t\u00e9 ", 5),  # a combining accent stays with its letter
        ("👩\u200d💻 and", 4),  # the emoji sequence is kept whole before the space
        ("👩\u200d💻", 0),
        ("", 0),
    ],
)
def test_word_boundary(text: str, cut: int) -> None:
    assert word_boundary(text) == cut


ENDED = StreamEnded("stop", None, StreamMetrics(None, None, None, 0, 0.0))


def chunks_of(pieces: list[str], last: ResponseEvent = ENDED) -> list[ResponseEvent]:
    """`pieces` as deltas of their own batches, re-cut; a stream always ends with a terminal
    event (`service.relay`), before which the text held back goes out."""
    rechunker = WordRechunker()
    out = rechunker.cut([StreamStarted("s", "m")])
    for piece in pieces:
        out += rechunker.cut([TextDelta(piece)])
    return out + rechunker.cut([last])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(codec="utf-8"), min_size=1), max_size=12))
def test_rechunking_keeps_the_text_and_cuts_only_on_boundaries(pieces: list[str]) -> None:
    failed = StreamFailed(UpstreamUnavailable("x"))
    out = chunks_of(pieces, failed)
    texts = [event.text for event in out if isinstance(event, TextDelta)]
    full = "".join(pieces)
    assert "".join(texts) == full
    assert all(texts)
    assert all(len(text) <= MAX_PENDING_CHARS for text in texts)
    position = 0
    for text in texts[:-1]:  # every cut but the end of the text
        position += len(text)
        before, after = full[position - 1], full[position]
        if before.isspace():
            continue  # a mark after whitespace has nothing to combine with
        continues = after == "\u200d" or unicodedata.category(after).startswith("M")
        if unicodedata.east_asian_width(before) in ("W", "F") and not continues:
            continue  # after a wide character
        # Not a boundary: a run with none, cut because it reached the limit, up to 32 marks
        # short of it so as not to split a character from them (at the limit past that many).
        assert len(text) > MAX_PENDING_CHARS - 32
        assert not continues or len(text) == MAX_PENDING_CHARS
    assert out[0] == StreamStarted("s", "m")
    assert out[-1] is failed


def test_tail_is_flushed_before_the_last_event() -> None:
    out = chunks_of(["Hel", "lo wo", "rld"], StreamFailed(UpstreamUnavailable("x")))
    assert [type(e).__name__ for e in out] == [
        "StreamStarted",
        "TextDelta",
        "TextDelta",
        "StreamFailed",
    ]
    assert [e.text for e in out if isinstance(e, TextDelta)] == ["Hello ", "world"]


def test_text_without_spaces_streams_in_linear_time() -> None:
    # 20,000 pieces of base64-like text: a quadratic search would take minutes here.
    pieces = ["QUJD"] * 20_000
    started = time.process_time()
    out = chunks_of(pieces)
    assert time.process_time() - started < 5
    texts = [event.text for event in out if isinstance(event, TextDelta)]
    assert "".join(texts) == "QUJD" * 20_000
    assert max(len(text) for text in texts) <= MAX_PENDING_CHARS + 4
    assert len(texts) > 300  # it streamed, rather than holding everything to the end


@pytest.mark.parametrize(
    "unit",
    ["x", "日", "e\u0301", "ab ", "👩\u200d💻"],
    ids=["ascii", "cjk", "marks", "words", "zwj"],
)
def test_a_huge_token_is_cut_at_the_documented_length_in_linear_time(unit: str) -> None:
    # Issue #11: a 3 MB token without spaces came out as one 2,999,999-character delta, after
    # ~1 s of searching. Measured now: under 0.15 s of CPU for 3 MB, whatever the script.
    token = unit * (3_000_000 // len(unit))
    started = time.process_time()
    out = chunks_of(["Start ", token, " end"])
    cpu_seconds = time.process_time() - started
    texts = [event.text for event in out if isinstance(event, TextDelta)]
    assert "".join(texts) == "Start " + token + " end"
    assert max(len(text) for text in texts) <= MAX_PENDING_CHARS
    assert cpu_seconds < 2.0
    # No character is split from what continues it.
    assert not any(text[0] == "\u200d" or unicodedata.category(text[0]) == "Mn" for text in texts)
