"""Incremental decoder for an upstream `text/event-stream` body: bytes in, `data` payloads out.

It follows the event stream interpretation rules of the HTML standard
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; consecutive `data:` lines join with LF; a blank line dispatches; one
space after the colon is dropped. OpenAI's chat completions put everything in `data`, so `feed`
ignores `event`, `id`, `retry` and comments; the Responses API names its events, which
`feed_named` returns with each payload (the name is kept to pass on, never needed to decode).

Reads arrive split anywhere: a CRLF or a multi-byte character can straddle two chunks. Payloads
stay bytes (`json.loads` takes them), so UTF-8 is only ever decoded on whole events. An event
whose data is empty is not dispatched, a byte order mark at the start is dropped, and an event
(its lines so far, or one unfinished line) may not exceed `max_event_bytes`.
"""

from __future__ import annotations

from typing import Any


class EventTooLarge(ValueError):
    """The upstream sent more than `max_event_bytes` without ending an event."""


class SSEDecoder:
    __slots__ = ("_data_bytes", "_data_lines", "_event", "_max_event_bytes", "_pending", "_started")

    def __init__(self, max_event_bytes: int = 4 * 1024 * 1024) -> None:
        self._pending = b""
        self._data_lines: list[bytes] = []
        self._data_bytes = 0
        self._max_event_bytes = max_event_bytes
        self._started = False
        self._event: bytes | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume one read; return the `data` payloads of the events it completed."""
        end = len(chunk) - 2
        if (  # `_one_event`, inlined: this runs once per token (issue #16)
            6 < end <= self._max_event_bytes
            and chunk.startswith(b"data: ")
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n", 6, end) < 0
            and chunk.find(b"\r") < 0
            and self._started
            and not self._pending
            and not self._data_lines
            and self._event is None
        ):
            return [chunk[6:end]]
        payloads: list[bytes] = self._feed(chunk, named=False)
        return payloads

    def feed_named(self, chunk: bytes) -> list[tuple[bytes | None, bytes]]:
        """Consume one read; return `(event name or None, data)` for the events it completed."""
        payload = self._one_event(chunk)
        if payload is not None:
            return [(None, payload)]
        events: list[tuple[bytes | None, bytes]] = self._feed(chunk, named=True)
        return events

    def _one_event(self, chunk: bytes) -> bytes | None:
        """The payload when `chunk` is exactly one whole event of one `data:` line and nothing
        is pending: the usual read of a streamed chat. Told by a few scans in C, at under half
        the cost of the walk line by line, once per token (issue #16). None: walk it."""
        end = len(chunk) - 2
        if (
            6 < end <= self._max_event_bytes
            and chunk.startswith(b"data: ")
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n", 6, end) < 0
            and chunk.find(b"\r") < 0
            and self._started
            and not self._pending
            and not self._data_lines
            and self._event is None
        ):
            return chunk[6:end]
        return None

    def _feed(self, chunk: bytes, *, named: bool) -> list[Any]:
        """The events completed by `chunk`: payloads, or `(name, payload)` when `named`."""
        buffer = self._pending + chunk if self._pending else chunk
        if not self._started and buffer:
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                self._pending = buffer  # maybe the start of a byte order mark: wait
                return []
            self._started = True
            buffer = buffer.removeprefix(b"\xef\xbb\xbf")
        # A trailing CR may be the first half of a CRLF: decide once the next byte is known.
        held_back = b""
        if buffer.endswith(b"\r"):
            buffer, held_back = buffer[:-1], b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, rest = buffer.split(b"\n")
        self._pending = rest + held_back
        if len(self._pending) > self._max_event_bytes:
            raise EventTooLarge(f"upstream event exceeds {self._max_event_bytes} bytes")

        payloads: list[Any] = []
        for line in lines:
            if not line:
                if self._data_lines:
                    data = b"\n".join(self._data_lines)
                    self._data_lines, self._data_bytes = [], 0
                    if data:
                        payloads.append((self._event, data) if named else data)
                self._event = None
            elif line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                self._data_bytes += len(value) + 1
                if self._data_bytes > self._max_event_bytes:
                    raise EventTooLarge(f"upstream event exceeds {self._max_event_bytes} bytes")
                self._data_lines.append(value)
            elif line == b"data":
                self._data_lines.append(b"")
            elif named and line.startswith(b"event:"):
                value = line[6:]
                self._event = value[1:] if value.startswith(b" ") else value
        return payloads
