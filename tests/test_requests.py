"""Request bodies: the accepted shapes, and a clear 4xx naming the field for everything else."""

from __future__ import annotations

import httpx
import pytest

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.services import RunningService
from testkit.sse_client import stream_chat


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "Hello"},
        {"message": "Hello"},
        {"messages": [{"role": "user", "content": "Hello"}]},
        {"message": "Hello", "stream": True},
    ],
)
def test_accepted_shapes_mean_one_user_message(
    service: RunningService, upstream: FakeUpstream, body: dict[str, object]
) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    response, _ = stream_chat(service.base_url, body)
    assert response.status_code == 200
    assert upstream.exchanges[0].json()["messages"] == [{"role": "user", "content": "Hello"}]


def test_body_without_json_content_type_is_accepted(
    service: RunningService, upstream: FakeUpstream
) -> None:
    # `curl -d` sends application/x-www-form-urlencoded; fetch() with a string sends text/plain.
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    response = httpx.post(
        service.base_url + "/api/chat/stream",
        content=b'{"message": "Hello"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b'{"message": ', 400, "not valid JSON"),
        (b"\xff\xfe not utf-8", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b"{}", 422, "exactly one of"),
        (b'{"prompt": "a", "message": "b"}', 422, "exactly one of"),
        (b'{"mesage": "typo"}', 422, "mesage"),
        (b'{"messages": []}', 422, "messages"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', 422, "messages.0.role"),
        (b'{"messages": [{"role": "user"}]}', 422, "messages.0.content"),
        (b'{"messages": "hi"}', 422, "messages"),
        (b'{"prompt": ""}', 422, "prompt"),
        (b'{"prompt": 5}', 422, "prompt"),
        (b'{"prompt": "x", "max_tokens": -1}', 422, "max_tokens"),
        (b'{"prompt": "x", "max_tokens": "many"}', 422, "max_tokens"),
        (b'{"prompt": "x", "temperature": 9}', 422, "temperature"),
        (b'{"prompt": "x", "stream": false}', 422, "stream"),
    ],
)
def test_bad_bodies_get_a_clear_error(
    service: RunningService, upstream: FakeUpstream, body: bytes, status: int, names: str
) -> None:
    response = httpx.post(
        service.base_url + "/api/chat/stream",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert names in error["message"]
    assert upstream.exchanges == []


def test_error_never_echoes_a_huge_input(service: RunningService) -> None:
    huge = "y" * 100_000
    response = httpx.post(
        service.base_url + "/api/chat/stream", json={"prompt": huge, "temperature": "hot"}
    )
    assert response.status_code == 422
    assert huge not in response.text
    assert len(response.content) < 2000


def test_openapi_documents_the_body(service: RunningService) -> None:
    schema = httpx.get(service.base_url + "/openapi.json").json()
    operation = schema["paths"]["/api/chat/stream"]["post"]
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"messages", "prompt", "message", "max_tokens"} <= set(body_schema["properties"])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"prompt": "x", "max_tokens": true}', "max_tokens"),
        (b'{"prompt": "x", "max_tokens": "10"}', "max_tokens"),
        (b'{"prompt": "x", "temperature": "1.5"}', "temperature"),
        (b'{"prompt": "x", "model": 4}', "model"),
    ],
)
def test_json_types_are_not_quietly_converted(
    service: RunningService, upstream: FakeUpstream, body: bytes, named: str
) -> None:
    response = httpx.post(service.base_url + "/api/chat/stream", content=body)
    assert response.status_code == 422
    assert named in response.json()["error"]["message"]
    assert upstream.exchanges == []


def test_a_whole_number_temperature_is_fine(
    service: RunningService, upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    response, _ = stream_chat(service.base_url, {"prompt": "x", "temperature": 1})
    assert response.status_code == 200
    assert upstream.exchanges[0].json()["temperature"] == 1
