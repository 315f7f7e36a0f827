"""A client that stops reading is dropped after the send timeout and its upstream closed."""

from __future__ import annotations

import time

from testkit.fake_upstream import FakeUpstream, Reply, chunk_event
from testkit.raw_client import open_stream, read_until
from testkit.services import TEST_KEY, ServiceFactory


def test_frozen_client_is_dropped_and_upstream_closed(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        send_timeout_seconds=1.0,
    )
    # Far more than socket buffers hold (one bytes object repeated: no memory cost here).
    upstream.queue(Reply(pieces=[chunk_event(content="x" * 2000)] * 50_000))
    sock = open_stream(running.host_port, {"prompt": "hi"}, receive_buffer=4096)
    try:
        read_until(sock, b'"type":"delta"', 1)
        stalled_at = time.monotonic()  # from here on the client reads nothing, but stays
        assert upstream.wait_for(
            lambda: upstream.exchanges[0].disconnected_at is not None, timeout=10
        )
        closed_at = upstream.exchanges[0].disconnected_at
        assert closed_at is not None
        # Dropped after the send timeout (1 s, checked within one more), not at once.
        assert 0.5 < closed_at - stalled_at < 6
        assert not upstream.exchanges[0].completed
        summary = running.wait_for_summaries(1)[0]
        assert summary["outcome"] == "cancelled"
        assert summary["error_type"] == "client_send_timeout"
    finally:
        sock.close()
