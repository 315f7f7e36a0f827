"""A client on a raw socket, so that a test decides exactly when it stops reading or closes,
and how small its receive buffer is."""

from __future__ import annotations

import json
import socket

from testkit.sse_client import STREAM_PATH


def open_stream(
    address: tuple[str, int],
    body: dict[str, object],
    receive_buffer: int | None = None,
    path: str = STREAM_PATH,
) -> socket.socket:
    """Connect to `address` and POST `body` to `path` (the stream endpoint unless told); the
    answer is left unread."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(address)
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    return sock


def read_until(sock: socket.socket, marker: bytes, count: int, timeout: float = 10) -> bytes:
    """Read until `marker` has been seen `count` times, the peer closes, or a read waits longer
    than `timeout` (`TimeoutError`); returns what was read."""
    sock.settimeout(timeout)
    received = b""
    while received.count(marker) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received
