"""Every client gets the same answer its own way: SSE, NDJSON and plain text, POST and GET."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from service.errors import NotAcceptable
from service.wire.negotiate import choose_format
from testkit.fake_upstream import RECORDINGS, FakeUpstream, Reply, answer_pieces
from testkit.services import TEST_KEY, RunningService, ServiceFactory
from testkit.sse_client import answer_text, read_events, stream_chat

TOKENS = [" Hello", ",", " wor", "ld", "!\n", 'Line "two"', " data: x", " 😀"]
TEXT = "".join(TOKENS)


def ndjson_lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line]


def get(service: RunningService, params: dict[str, str], **headers: str) -> httpx.Response:
    return httpx.get(
        service.base_url + "/api/chat/stream", params=params, headers=headers, timeout=30
    )


@pytest.mark.parametrize("how", ["accept", "format"])
def test_ndjson_objects_are_the_sse_payloads(
    service: RunningService, upstream: FakeUpstream, how: str
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)), Reply(pieces=answer_pieces(TOKENS)))
    params = {"format": "ndjson"} if how == "format" else {}
    headers = {"accept": "application/x-ndjson"} if how == "accept" else {}
    ndjson = httpx.post(
        service.base_url + "/api/chat/stream", params=params, headers=headers, json={"prompt": "hi"}
    )
    _, sse = stream_chat(service.base_url, {"prompt": "hi"})

    assert ndjson.status_code == 200
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert ndjson.headers["x-accel-buffering"] == "no"
    lines = ndjson_lines(ndjson)
    sse_objects = [e.json() for e in sse if e.data != "[DONE]"]
    assert [line["type"] for line in lines] == [o["type"] for o in sse_objects]
    assert "".join(line["content"] for line in lines) == TEXT
    assert lines[-1]["type"] == "end"
    assert lines[-1]["usage"]["completion_tokens"] == len(TOKENS)
    assert set(lines[-1]["metrics"]) == set(sse_objects[-1]["metrics"])
    assert [line for line in lines if line["type"] == "delta"] == [
        o for o in sse_objects if o["type"] == "delta"
    ]


def test_plain_text_is_only_the_text(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    response = httpx.post(
        service.base_url + "/api/chat/stream",
        headers={"accept": "text/plain"},
        json={"prompt": "hi"},
    )
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == TEXT.encode()


def test_errors_in_band_for_every_format(service: RunningService, upstream: FakeUpstream) -> None:
    body = (RECORDINGS / "midstream_error_stream.sse").read_bytes()
    upstream.queue(Reply(pieces=[body]), Reply(pieces=[body]))
    text = httpx.post(service.base_url + "/api/chat/stream?format=text", json={"prompt": "hi"}).text
    assert text.startswith("Partial answer\n[error: the upstream failed mid-stream")
    assert text.endswith("]\n")
    lines = ndjson_lines(
        httpx.post(service.base_url + "/api/chat/stream?format=ndjson", json={"prompt": "hi"})
    )
    assert lines[-1]["type"] == "error"
    assert lines[-1]["error"]["type"] == "upstream_unavailable"


def test_errors_before_the_first_token_are_json_for_every_format(
    service: RunningService, upstream: FakeUpstream
) -> None:
    for format_name in ("sse", "ndjson", "text"):
        upstream.queue(Reply(status=503, body=b'{"error":{"message":"busy"}}'))
        response = get(service, {"message": "hi", "format": format_name})
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "upstream_unavailable"


def test_unsupported_accept_is_406_naming_the_types(
    service: RunningService, upstream: FakeUpstream
) -> None:
    response = get(service, {"message": "hi"}, accept="application/xml")
    assert response.status_code == 406
    message = response.json()["error"]["message"]
    for media_type in ("text/event-stream", "application/x-ndjson", "text/plain"):
        assert media_type in message
    assert upstream.exchanges == []


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "sse"),
        ("*/*", "sse"),
        ("text/event-stream", "sse"),
        ("application/x-ndjson", "ndjson"),
        ("text/plain", "text"),
        ("text/*", "sse"),
        ("text/event-stream;q=0.2, application/x-ndjson", "ndjson"),
        ("text/plain;q=0.9, */*;q=0.1", "text"),
        ("application/json, */*;q=0.5", "sse"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "sse"),
    ],
)
def test_accept_negotiation(accept: str | None, chosen: str) -> None:
    assert choose_format(None, accept) == chosen


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream;q=0, */*;q=0"])
def test_accept_with_nothing_supported(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        choose_format(None, accept)


def test_format_parameter_overrides_accept() -> None:
    assert choose_format("text", "application/x-ndjson") == "text"


def test_get_streams_the_same_events(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "GET",
            service.base_url + "/api/chat/stream",
            params={"message": "hi", "model": "m2", "max_tokens": "9", "temperature": "0.1"},
        ) as response,
    ):
        events = read_events(response)
    assert answer_text(events) == TEXT
    sent = upstream.exchanges[0].json()
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("m2", 9, 0.1)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"message": "hi", "mesage": "x"}, "mesage"),
        ({"message": "hi", "max_tokens": "lots"}, "max_tokens"),
        ({"message": "hi", "format": "xml"}, "format"),
        ({"message": "hi", "chunking": "sentence"}, "chunking"),
        ({}, "message"),
        ({"prompt": "hi"}, "message"),  # GET takes `message` only
    ],
)
def test_get_refuses_bad_parameters(
    service: RunningService, upstream: FakeUpstream, params: dict[str, str], named: str
) -> None:
    response = get(service, params)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]
    assert upstream.exchanges == []


def test_repeated_parameter_is_refused(service: RunningService) -> None:
    response = httpx.get(service.base_url + "/api/chat/stream?message=a&message=b")
    assert response.status_code == 422
    assert "more than once" in response.json()["error"]["message"]


def test_eventsource_reconnect_after_the_end_gets_204(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    _, events = stream_chat(service.base_url, {"prompt": "hi"})
    done = events[-1]
    assert done.data == "[DONE]"
    assert done.id.endswith(":done")
    again = get(service, {"message": "hi"}, **{"last-event-id": done.id})
    assert again.status_code == 204
    assert again.content == b""
    assert len(upstream.exchanges) == 1


def test_start_event_carries_the_retry_field(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = service_factory(
        openai_api_key=TEST_KEY, openai_base_url=upstream.base_url, sse_retry_ms=1234
    )
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    text = get(running, {"message": "hi"}).text
    first_event = text.split("\n\n")[0].splitlines()
    assert first_event[0] == "retry: 1234"
    assert "event: start" in first_event


def test_reconnect_mid_stream_is_a_new_answer(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces(TOKENS)))
    response = get(service, {"message": "hi"}, **{"last-event-id": "chat-abc:3"})
    assert response.status_code == 200
    assert len(upstream.exchanges) == 1


def heartbeat_service(
    service_factory: ServiceFactory, upstream: FakeUpstream, **extra: Any
) -> RunningService:
    return service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        upstream_max_retries=0,
        heartbeat_seconds=0.2,
        **extra,
    )


def test_sse_heartbeats_while_waiting_for_the_first_token(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = heartbeat_service(service_factory, upstream)
    upstream.queue(Reply(pieces=answer_pieces(["late"]), delay_before_headers=1.0))
    started = time.monotonic()
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", running.base_url + "/api/chat/stream", json={"prompt": "hi"}
        ) as response,
    ):
        headers_after = time.monotonic() - started
        body = response.read().decode()
    assert headers_after < 0.9  # headers were committed for the heartbeat, before the token
    assert body.startswith(": ping\n\n")
    assert body.count(": ping") >= 2
    events = [block for block in body.split("\n\n") if block and not block.startswith(":")]
    assert '"content":"late"' in events[1]


def test_error_after_heartbeat_committed_headers_is_in_band(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = heartbeat_service(service_factory, upstream)
    upstream.queue(Reply(status=500, body=b'{"error":{"message":"x"}}', delay_before_headers=0.6))
    response, events = stream_chat(running.base_url, {"prompt": "hi"})
    assert response.status_code == 200
    assert [e.event for e in events] == ["error", "message"]
    assert events[0].json()["error"]["type"] == "upstream_unavailable"
    assert events[1].data == "[DONE]"


def test_ndjson_heartbeat_only_when_enabled(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    quiet = heartbeat_service(service_factory, upstream)
    chatty = heartbeat_service(service_factory, upstream, ndjson_heartbeat=True)
    for running, expect_ping in ((quiet, False), (chatty, True)):
        upstream.queue(Reply(pieces=answer_pieces(["late"]), delay_before_headers=0.7))
        lines = ndjson_lines(get(running, {"message": "hi", "format": "ndjson"}))
        assert ({"type": "ping", "content": ""} in lines) is expect_ping
        assert "".join(line["content"] for line in lines) == "late"


def test_plain_text_never_gets_heartbeats(
    service_factory: ServiceFactory, upstream: FakeUpstream
) -> None:
    running = heartbeat_service(service_factory, upstream)
    upstream.queue(Reply(pieces=answer_pieces(["late"]), delay_before_headers=0.7))
    assert get(running, {"message": "hi", "format": "text"}).text == "late"


def test_word_chunking_end_to_end(service: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces(["Hel", "lo wo", "rld, ", "how", " are", " you?"])))
    lines = ndjson_lines(get(service, {"message": "hi", "format": "ndjson", "chunking": "word"}))
    deltas = [line["content"] for line in lines if line["type"] == "delta"]
    assert deltas == ["Hello ", "world, ", "how ", "are ", "you?"]
    assert lines[-1]["type"] == "end"
