"""The access log (issue #11): the service's own JSON lines, never a query string, from
`python -m service` as it ships."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.service_process import start_service_process, stop_and_collect

PROMPT = "PROMPT-that-must-not-be-logged"
URL_KEY = "sk-URLKEY-that-must-not-be-logged"


def json_lines(stderr: str, logger: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry["logger"] == logger]


@pytest.mark.server
def test_requests_are_logged_as_json_without_their_query(tmp_path: Path) -> None:
    process, base_url = start_service_process(
        tmp_path, DEMO_TOKENS_PER_SECOND="1000", DEMO_FIRST_TOKEN_DELAY_SECONDS="0"
    )
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            streamed = client.get(f"/api/chat/stream?message={PROMPT}&format=text")
            refused = client.post(f"/api/chat/stream?api_key={URL_KEY}", json={"prompt": "hi"})
            missing = client.get(f"/nope?token={URL_KEY}")
    finally:
        stdout, stderr = stop_and_collect(process)
    assert (streamed.status_code, refused.status_code, missing.status_code) == (200, 422, 404)
    for output in (stdout, stderr):
        assert PROMPT not in output
        assert "URLKEY" not in output
        assert '- "GET ' not in output  # uvicorn's own access log is off
    requests = json_lines(stderr, "service.access")
    chat, rejected, unknown = requests[-3:]
    (summary,) = json_lines(stderr, "service.streams")
    assert chat["method"] == "GET"
    assert chat["path"] == "/api/chat/stream"
    assert chat["status"] == 200
    assert chat["stream_id"] == summary["stream_id"]
    assert chat["duration_ms"] >= summary["duration_ms"] * 0.9  # to the end of the stream
    assert (rejected["method"], rejected["path"], rejected["status"]) == (
        "POST",
        "/api/chat/stream",
        422,
    )
    assert rejected["stream_id"] is None
    assert (unknown["path"], unknown["status"]) == ("/nope", 404)
