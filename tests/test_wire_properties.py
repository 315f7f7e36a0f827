"""Property tests: any text survives the service's framing and its upstream decoder."""

from __future__ import annotations

import json

import httpx
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import UpstreamUnavailable
from service.events import StreamEnded, StreamFailed, StreamMetrics, StreamStarted, TextDelta, Usage
from service.upstream.sse_decoder import EventTooLarge, SSEDecoder
from service.wire.sse import SSEEncoder
from testkit.fake_upstream import chunk_event

# Every code point, lone surrogates included (a model can emit half an emoji).
any_text = st.text(st.characters(exclude_categories=()), min_size=1)
METRICS = StreamMetrics(
    ttft_ms=1.0, upstream_ttft_ms=0.5, tokens_per_second=2.0, output_tokens=3, duration_ms=4.0
)


def parse(body: bytes) -> list[tuple[str, str, str]]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return [(event.event, event.data, event.id) for event in EventSource(response).iter_sse()]


@settings(max_examples=300, deadline=None)
@given(st.lists(any_text, min_size=1, max_size=8))
def test_sse_round_trip_through_a_standard_parser(pieces: list[str]) -> None:
    encoder = SSEEncoder("s1")
    body = encoder.encode(StreamStarted("s1", "m"))
    body += b"".join(encoder.encode(TextDelta(piece)) for piece in pieces)
    body += encoder.encode(StreamEnded("stop", Usage(1, 2, 3), METRICS)) + encoder.close()

    events = parse(body)

    assert [json.loads(data)["content"] for _, data, _ in events[1:-2]] == pieces
    assert [name for name, _, _ in events] == ["start"] + ["message"] * len(pieces) + [
        "end",
        "message",
    ]
    assert events[-1][1] == "[DONE]"
    assert [event_id for _, _, event_id in events] == [
        *(f"s1:{i}" for i in range(len(events) - 1)),
        "s1:done",
    ]


def test_error_event_shape() -> None:
    encoder = SSEEncoder("s2")
    ((name, data, _),) = parse(encoder.encode(StreamFailed(UpstreamUnavailable("gone"))))
    assert name == "error"
    assert json.loads(data) == {
        "type": "error",
        "content": "",
        "error": {"type": "upstream_unavailable", "message": "gone", "retryable": True},
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(any_text, min_size=1, max_size=6),
    st.lists(st.integers(1, 40), min_size=1),
    st.booleans(),
)
def test_upstream_decoder_is_split_invariant(
    texts: list[str], sizes: list[int], crlf: bool
) -> None:
    body = b"".join(chunk_event(content=text) for text in texts) + b"data: [DONE]\n\n"
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    decoder = SSEDecoder()
    payloads: list[bytes] = []
    offset, index = 0, 0
    while offset < len(body):
        size = sizes[index % len(sizes)]
        payloads += decoder.feed(body[offset : offset + size])
        offset, index = offset + size, index + 1

    assert payloads[-1] == b"[DONE]"
    decoded = [json.loads(p)["choices"][0]["delta"]["content"] for p in payloads[:-1]]
    assert decoded == texts


_ascii_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_sse_line = st.tuples(
    st.sampled_from(["data: ", "data:", "event: e", ": note", "id: 1"]), _ascii_value
).map(lambda parts: (parts[0] + parts[1]).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(_sse_line, min_size=1, max_size=3), min_size=1, max_size=6),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.integers(1, 40),
)
def test_decoder_reads_what_a_standard_parser_reads(
    events: list[list[bytes]], newline: bytes, cut: int
) -> None:
    """One read per event (the decoder's fast path) or reads cut anywhere, with every kind of
    line and line end: the payloads and names are those httpx-sse's parser finds."""
    framed = [newline.join(lines) + newline * 2 for lines in events]
    body = b"".join(framed)
    # A comment last: a final CR is held back until the next byte says it is no CRLF.
    tail = b": end" + newline
    expected = [
        (None if name == "message" else name.encode(), data.encode())
        for name, data, _ in parse(body + tail)
        if data  # an event with empty data is not dispatched
    ]
    whole = [*framed, tail]  # one read per event, as upstreams send them (the fast path)
    pieces = [(body + tail)[offset : offset + cut] for offset in range(0, len(body + tail), cut)]
    for reads in (whole, pieces):
        decoder = SSEDecoder()
        found: list[tuple[bytes | None, bytes]] = []
        for read in reads:
            found += decoder.feed_named(read)
        assert found == expected


def test_decoder_follows_the_sse_line_rules() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": comment\r") == []
    assert decoder.feed(b"\nevent: x\rdata:a\ndata: b\n") == []
    assert decoder.feed(b"\r") == []
    assert decoder.feed(b"\n") == [b"a\nb"]  # the CRLF split across reads is one line end
    assert decoder.feed(b"data\n\n") == []  # empty data is not dispatched
    assert decoder.feed(b"data: \n\ndata: x\n\n") == [b"x"]


def test_decoder_refuses_an_endless_event() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    try:
        decoder.feed(b"data: " + b"x" * 200)
    except EventTooLarge:
        return
    raise AssertionError("an oversized event was accepted")


def test_decoder_bounds_an_event_made_of_many_lines() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    try:
        for _ in range(200):
            decoder.feed(b"data: xxxxxxxxxx\n")  # never a blank line: one ever-growing event
    except EventTooLarge:
        return
    raise AssertionError("an event of 200 data lines passed a 1 KiB limit")


def test_decoder_drops_a_byte_order_mark_even_when_split() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb") == []
    assert decoder.feed(b"\xbfdata: first\n\n") == [b"first"]
    assert decoder.feed(b"\xef\xbb\xbfdata: x\n\n") == []  # only at the very start
