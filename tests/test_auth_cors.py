"""Service API keys and CORS."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from pydantic import ValidationError

from testkit.fake_upstream import FakeUpstream, Reply, answer_pieces
from testkit.services import TEST_KEY, RunningService, ServiceFactory, make_settings
from testkit.sse_client import stream_chat

KEYS = "first-service-key,second-service-key"


@pytest.fixture
def guarded(service_factory: ServiceFactory, upstream: FakeUpstream) -> RunningService:
    return service_factory(
        openai_api_key=TEST_KEY,
        openai_base_url=upstream.base_url,
        service_api_keys=KEYS,
        max_streams_per_key=1,
        cors_allow_origins="https://chat.example.com",
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic Zmlyc3Q="},
        {"authorization": "Bearer"},
        {"authorization": "Bearer first-service-key-but-longer"},
    ],
)
def test_missing_or_wrong_key_is_the_same_401(
    guarded: RunningService, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    for method in ("POST", "GET"):
        response = httpx.request(
            method,
            guarded.base_url + "/api/chat/stream",
            params={"message": "hi"} if method == "GET" else None,
            json={"prompt": "hi"} if method == "POST" else None,
            headers=headers,
        )
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json() == {
            "error": {
                "type": "unauthorized",
                "message": "a valid API key is required: send Authorization: Bearer <key>",
                "retryable": False,
            }
        }
    assert upstream.exchanges == []


# The other routes that read the key: the hot ones read it by hand, not through FastAPI's
# bearer dependency (issue #16): the same rule, and their own error shapes.
KEYED_ROUTES = [
    (
        "/api/chat",
        {"messages": [{"id": "1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
    ),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": "m", "input": "hi"}),
]


@pytest.mark.parametrize(
    "authorization", ["", "Bearer wrong", "Basic Zmlyc3Q=", "Bearer", "first-service-key"]
)
@pytest.mark.parametrize(("path", "body"), KEYED_ROUTES, ids=[path for path, _ in KEYED_ROUTES])
def test_every_keyed_route_refuses_a_missing_or_wrong_key(
    guarded: RunningService,
    upstream: FakeUpstream,
    path: str,
    body: dict[str, object],
    authorization: str,
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.post(guarded.base_url + path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "a valid API key is required" in response.json()["error"]["message"]
    assert upstream.exchanges == []


def test_a_get_without_a_key_is_refused_before_its_query_is_checked(
    guarded: RunningService, upstream: FakeUpstream
) -> None:
    """No key and no `message`: the 401, not a 422 that tells a stranger how to ask."""
    response = httpx.get(guarded.base_url + "/api/chat/stream")
    assert response.status_code == 401
    assert upstream.exchanges == []


def test_the_scheme_is_case_insensitive(guarded: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    response, _ = stream_chat(
        guarded.base_url, {"prompt": "hi"}, headers={"authorization": "bearer first-service-key"}
    )
    assert response.status_code == 200


def test_every_keyed_route_documents_the_bearer_key(service_factory: ServiceFactory) -> None:
    running = service_factory(service_api_keys=KEYS, docs_enabled=True)
    document = httpx.get(running.base_url + "/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    open_paths = {"/healthz", "/readyz", "/metrics"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            expected: list[dict[str, list[str]]] | None = (
                None if path in open_paths else [{"HTTPBearer": []}]
            )
            assert operation.get("security") == expected, (method, path)


def test_each_configured_key_works(guarded: RunningService, upstream: FakeUpstream) -> None:
    for key in KEYS.split(","):
        upstream.queue(Reply(pieces=answer_pieces([" ok"])))
        response, _ = stream_chat(
            guarded.base_url, {"prompt": "hi"}, headers={"authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200


def test_health_stays_open_and_quiet(guarded: RunningService) -> None:
    for path in ("/healthz", "/readyz"):
        response = httpx.get(guarded.base_url + path)
        assert response.status_code == 200
        assert "key" not in response.text.lower()


def test_per_key_limit(guarded: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" w"] * 40), pause=0.05))
    sock = socket.create_connection(guarded.host_port)
    payload = json.dumps({"prompt": "a"}).encode()
    sock.sendall(
        b"POST /api/chat/stream HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer first-service-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    assert upstream.wait_for_exchanges(1)
    same_key = httpx.post(
        guarded.base_url + "/api/chat/stream",
        json={"prompt": "b"},
        headers={"authorization": "Bearer first-service-key"},
    )
    assert same_key.status_code == 429
    assert "API key" in same_key.json()["error"]["message"]
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    other_key = httpx.post(
        guarded.base_url + "/api/chat/stream",
        json={"prompt": "c"},
        headers={"authorization": "Bearer second-service-key"},
    )
    assert other_key.status_code == 200
    sock.close()


def test_cors_preflight_for_allowed_origin(guarded: RunningService) -> None:
    response = httpx.options(
        guarded.base_url + "/api/chat/stream",
        headers={
            "origin": "https://chat.example.com",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_cors_preflight_lets_the_openai_js_sdk_through(guarded: RunningService) -> None:
    requested = "authorization, content-type, x-stainless-os, x-stainless-retry-count"
    response = httpx.options(
        guarded.base_url + "/v1/chat/completions",
        headers={
            "origin": "https://chat.example.com",
            "access-control-request-method": "POST",
            "access-control-request-headers": requested,
        },
    )
    assert response.status_code == 200
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(name.strip() in allowed for name in requested.split(","))


def test_cors_foreign_origin_gets_no_allow_headers(
    guarded: RunningService, upstream: FakeUpstream
) -> None:
    preflight = httpx.options(
        guarded.base_url + "/api/chat/stream",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    simple = httpx.post(
        guarded.base_url + "/api/chat/stream",
        json={"prompt": "hi"},
        headers={"origin": "https://evil.example", "authorization": "Bearer first-service-key"},
    )
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allowed_origin_on_the_stream(guarded: RunningService, upstream: FakeUpstream) -> None:
    upstream.queue(Reply(pieces=answer_pieces([" ok"])))
    response, _ = stream_chat(
        guarded.base_url,
        {"prompt": "hi"},
        headers={
            "origin": "https://chat.example.com",
            "authorization": "Bearer second-service-key",
        },
    )
    assert response.headers["access-control-allow-origin"] == "https://chat.example.com"


def test_wildcard_with_credentials_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="CORS_ALLOW_ORIGINS"):
        make_settings(cors_allow_origins="*", cors_allow_credentials=True)


def test_per_key_limit_needs_keys() -> None:
    with pytest.raises(ValidationError, match="SERVICE_API_KEYS"):
        make_settings(max_streams_per_key=2)


@pytest.mark.parametrize(
    ("keys", "docs_enabled", "served"),
    [
        (None, None, True),
        ("k1", None, False),  # issue #11: a keyed service kept its API documents public
        ("k1", True, True),
        (None, False, False),
    ],
)
def test_api_documents_follow_the_keys_or_docs_enabled(
    service_factory: ServiceFactory, keys: str | None, docs_enabled: bool | None, served: bool
) -> None:
    running = service_factory(service_api_keys=keys, docs_enabled=docs_enabled)
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = httpx.get(running.base_url + path)
        assert response.status_code == (200 if served else 404), path
        if not served:
            assert response.json()["error"]["type"] == "not_found"
