"""No secret gets out: everything a service process produced (responses, headers, logs at debug
level) is scanned for the upstream key and the service key, after upstreams that echo the key
in every kind of error."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces, chunk_event, error_body
from testkit.service_process import start_service_process, stop_and_collect, stream_outcomes

UPSTREAM_KEY = "sk-proj-SECRETupstream0123456789abcdef"
SERVICE_KEY = "svc-SECRETservice0123456789"


def echoing_replies() -> list[Reply]:
    echo = f"Incorrect API key provided: {UPSTREAM_KEY}. You can find your key at ..."
    midstream = json.dumps({"error": {"message": f"failed for {UPSTREAM_KEY}", "type": "x"}})
    return [
        Reply(status=401, body=error_body(echo, "invalid_request_error", "invalid_api_key")),
        Reply(status=403, body=error_body(echo, "permission_error")),
        Reply(status=400, body=error_body(f"bad request with key {UPSTREAM_KEY}", "invalid")),
        Reply(status=404, body=error_body(f"model not found for {UPSTREAM_KEY[:20]}...", "x")),
        Reply(status=429, headers={"retry-after": "1"}, body=error_body(echo, "requests")),
        Reply(status=500, body=error_body(echo, "server_error")),
        Reply(pieces=[chunk_event(content="Hi"), b"data: " + midstream.encode() + b"\n\n"]),
        Reply(pieces=answer_pieces([" fine"])),
    ]


def test_no_secret_in_anything_the_service_produced(upstream: FakeUpstream, tmp_path: Path) -> None:
    process, base_url = start_service_process(
        tmp_path,
        OPENAI_API_KEY=UPSTREAM_KEY,
        OPENAI_BASE_URL=upstream.base_url,
        SERVICE_API_KEYS=SERVICE_KEY,
        LOG_LEVEL="debug",
        UPSTREAM_MAX_RETRIES="0",
    )
    produced: list[str] = []
    try:
        auth = {"authorization": f"Bearer {SERVICE_KEY}"}
        replies = echoing_replies()
        upstream.queue(*replies)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for _ in replies:
                response = client.post("/api/chat/stream", json={"prompt": "hi"}, headers=auth)
                produced += [response.text, repr(response.headers)]
            for wrong in ({}, {"authorization": f"Bearer {SERVICE_KEY}x"}):
                response = client.post("/api/chat/stream", json={"prompt": "hi"}, headers=wrong)
                assert response.status_code == 401
                produced += [response.text, repr(response.headers)]
            for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/"):
                response = client.get(path)
                produced += [response.text, repr(response.headers)]
        assert len(upstream.exchanges) == len(replies)
    finally:
        stdout, stderr = stop_and_collect(process)
    produced += [stdout, stderr]
    everything = "\n".join(produced)
    # The run did produce the error logs scanned here.
    assert any(outcome == "error" for outcome, _ in stream_outcomes(stderr))
    assert "[redacted]" in everything  # the echoing upstream messages were reduced
    for secret in (UPSTREAM_KEY, SERVICE_KEY, UPSTREAM_KEY[:20], "SECRETupstream", "SECRETservice"):
        assert secret not in everything, secret
