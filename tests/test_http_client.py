"""The SDK's HTTP client (`service.upstream.http_client`): the real `AsyncOpenAI` and
`AsyncAzureOpenAI` send through it the very requests they send through httpx2's own client,
over a recording transport (the transport is faked, never the SDK)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from service.domain import ChatMessage, CompletionParams, PassthroughParams
from service.upstream.http_client import ServiceHTTPClient, needs_httpx_client
from service.upstream.openai_chat import OpenAIChatUpstream
from testkit.services import make_settings

IGNORED = {b"x-stainless-retry-count", b"idempotency-key"}  # differ request to request


class Recording(httpx2.AsyncBaseTransport):
    """Answers every request with a short event stream (and a cookie); keeps each request."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        self.requests.append(request)
        return httpx2.Response(
            200,
            headers=[(b"content-type", b"text/event-stream"), (b"set-cookie", b"session=1")],
            stream=httpx2.ByteStream(b"data: [DONE]\n\n"),
            request=request,
        )


def options(hooks: list[str]) -> dict[str, Any]:
    async def on_request(request: httpx2.Request) -> None:
        hooks.append("request")

    async def on_response(response: httpx2.Response) -> None:
        hooks.append("response " + response.headers["content-type"])

    return {
        "timeout": openai.Timeout(60, connect=5),
        "headers": {"Accept-Encoding": "identity"},
        "follow_redirects": False,
        "event_hooks": {"request": [on_request], "response": [on_response]},
    }


def seen(request: httpx2.Request) -> tuple[Any, ...]:
    headers = sorted((k.lower(), v) for k, v in request.headers.raw if k.lower() not in IGNORED)
    return request.method, str(request.url), headers, request.content, request.extensions


AZURE_ENDPOINT = "https://example.openai.azure.com"


def azure_client(http: httpx2.AsyncClient, **options: Any) -> openai.AsyncAzureOpenAI:
    return openai.AsyncAzureOpenAI(
        azure_endpoint=AZURE_ENDPOINT,
        api_key="azure-key",
        api_version="2024-10-21",
        http_client=http,
        **options,
    )


async def sent_by(
    client_class: type[httpx2.AsyncClient],
    azure: bool = False,
    base_url: str = "http://127.0.0.1:9/v1",
) -> tuple[list[httpx2.Request], list[str]]:
    transport, hooks = Recording(), list[str]()
    http = client_class(transport=transport, **options(hooks))
    sdk: openai.AsyncOpenAI
    if azure:
        sdk = azure_client(http)
    else:
        sdk = openai.AsyncOpenAI(api_key="key", base_url=base_url, http_client=http)
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for _ in range(2):  # the second would carry the first's cookie, if kept
        stream = await sdk.post(
            "/chat/completions",
            body=body,
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
        await stream.response.aclose()
    async with sdk.models.with_streaming_response.list() as listed:  # a GET, no body
        await listed.read()
    await sdk.close()
    return transport.requests, hooks


@pytest.mark.parametrize("azure", [False, True], ids=["openai", "azure"])
async def test_the_sdk_sends_what_it_sends_through_httpx2s_client(azure: bool) -> None:
    ours, our_hooks = await sent_by(ServiceHTTPClient, azure)
    theirs, their_hooks = await sent_by(httpx2.AsyncClient, azure)
    assert [seen(request) for request in ours[:1] + ours[2:]] == [
        seen(request) for request in theirs[:1] + theirs[2:]
    ]
    assert our_hooks == their_hooks == ["request", "response text/event-stream"] * 3
    assert ours[0].extensions["timeout"] == {"connect": 5, "read": 60, "write": 60, "pool": 60}
    # An upstream's cookie is not kept for the next request (another user's, maybe).
    assert "cookie" not in ours[1].headers
    assert "cookie" in theirs[1].headers


async def test_a_base_url_with_credentials_is_sent_as_through_httpx2s_client() -> None:
    """The SDK keeps a base URL's `user:password@` in the URLs it sends; httpx2's client turns
    them into Basic auth (in place of the key's Bearer), and so does the service's."""
    with_credentials = "http://user:secret@127.0.0.1:9/v1"
    ours, _ = await sent_by(ServiceHTTPClient, base_url=with_credentials)
    theirs, _ = await sent_by(httpx2.AsyncClient, base_url=with_credentials)
    assert [seen(request) for request in ours[:1]] == [seen(request) for request in theirs[:1]]
    assert ours[0].url.userinfo == b"user:secret"
    assert ours[0].headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="


async def typed_chat(sdk: openai.AsyncOpenAI) -> None:
    """One streamed chat through the SDK's typed method, as the service's own asks for it."""
    chat = await sdk.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    await chat.response.aclose()


async def service_chat(upstream: OpenAIChatUpstream) -> None:
    """The same chat through the service's upstream, read to its end."""
    async for _ in upstream.stream(CompletionParams("gpt", (ChatMessage("user", "hi"),))):
        pass


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1/",
        "http://127.0.0.1:9",
        "http://[::1]:9/proxy/openai/v1",
        "https://example.com/v1",
    ],
)
async def test_the_service_posts_where_the_sdks_typed_methods_post(base_url: str) -> None:
    """The service hands the SDK whole URLs and its client's own options (issue #16): the
    requests are those of `chat.completions.create` and `responses.create`, whatever the base
    URL's shape."""

    async def sent(typed: bool) -> list[httpx2.Request]:
        transport = Recording()
        sdk = openai.AsyncOpenAI(
            api_key="key",
            base_url=base_url,
            max_retries=0,
            http_client=ServiceHTTPClient(transport=transport, **options([])),
        )
        if typed:
            await typed_chat(sdk)
            answer = await sdk.responses.create(model="gpt", input="hi", stream=True)
            await answer.response.aclose()
        else:
            upstream = OpenAIChatUpstream(make_settings(openai_api_key="key"), sdk)
            await service_chat(upstream)
            body = {"model": "gpt", "input": "hi", "stream": True}
            async for _ in upstream.passthrough(PassthroughParams("responses", body, "gpt", True)):
                pass
        await sdk.close()
        return transport.requests

    ours, theirs = await sent(typed=False), await sent(typed=True)
    assert [(r.method, str(r.url)) for r in ours] == [(r.method, str(r.url)) for r in theirs]
    assert [seen(r)[2] for r in ours] == [seen(r)[2] for r in theirs]
    assert [r.extensions for r in ours] == [r.extensions for r in theirs]
    assert [r.url.path.split("/")[-1] for r in ours] == ["completions", "responses"]


class FailingTwice(Recording):
    """Answers 500 twice (asking for a 1 ms wait), then as `Recording` does."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        answer = await super().handle_async_request(request)
        if len(self.requests) > 2:
            return answer
        return httpx2.Response(
            500,
            headers=[(b"content-type", b"application/json"), (b"retry-after-ms", b"1")],
            content=b'{"error": {"message": "try again", "type": "server_error"}}',
            request=request,
        )


@pytest.mark.parametrize("azure", [False, True], ids=["openai", "azure"])
async def test_the_service_retries_as_the_sdks_typed_methods_do(azure: bool) -> None:
    """The request options the service passes are the client's own: the same attempts, retry
    counts and timeouts as a typed call's, for both clients."""

    async def sent(typed: bool) -> list[httpx2.Request]:
        transport = FailingTwice()
        http = ServiceHTTPClient(transport=transport, **options([]))
        sdk: openai.AsyncOpenAI
        if azure:
            sdk = azure_client(http, max_retries=2)
            settings = make_settings(
                azure_openai_endpoint=AZURE_ENDPOINT,
                azure_openai_api_key="azure-key",
                azure_openai_deployment="gpt",
            )
        else:
            sdk = openai.AsyncOpenAI(api_key="key", max_retries=2, http_client=http)
            settings = make_settings(openai_api_key="key")
        if typed:
            await typed_chat(sdk)
        else:
            await service_chat(OpenAIChatUpstream(settings, sdk))
        await sdk.close()
        return transport.requests

    def attempt(request: httpx2.Request) -> tuple[Any, ...]:
        method, url, headers, content, extensions = seen(request)
        return method, url, headers, json.loads(content), extensions  # keys in any order

    ours, theirs = await sent(typed=False), await sent(typed=True)
    assert len(ours) == len(theirs) == 3
    assert [attempt(r) for r in ours] == [attempt(r) for r in theirs]
    assert [r.headers["x-stainless-retry-count"] for r in ours] == ["0", "1", "2"]


async def test_anything_else_goes_through_httpx2s_own_methods() -> None:
    transport, hooks = Recording(), list[str]()
    async with ServiceHTTPClient(transport=transport, **options(hooks)) as http:
        response = await http.post("http://127.0.0.1:9/form", data={"a": "1"}, auth=("u", "p"))
    assert response.status_code == 200
    assert transport.requests[0].content == b"a=1"
    assert transport.requests[0].headers["authorization"].startswith("Basic ")
    assert hooks == ["request", "response text/event-stream"]


@pytest.mark.parametrize(
    ("url", "headers", "content", "defaults"),
    [
        ("http://127.0.0.1:9/v1/chat", [("Content-Type", "application/json")], b"{}", {}),
        ("https://api.example.com/v1/responses", [("X-Extra", "1")], b'{"a": 1}', {}),
        ("http://[::1]:9/x", [("content-type", "application/json")], b"{}", {}),
        ("http://127.0.0.1:9/x", [("Host", "other.example")], b"{}", {}),
        ("http://127.0.0.1:9/x", [("Content-Length", "2")], b"{}", {}),
        ("http://127.0.0.1:9/x", [("Transfer-Encoding", "chunked")], b"{}", {}),
        ("http://127.0.0.1:9/x", [], b"{}", {"Host": "other.example"}),
        ("http://127.0.0.1:9/x", [], b"{}", {"Content-Length": "2"}),
        ("http://:9/x", [], b"{}", {}),
        ("http://127.0.0.1:9/x", [("X-Extra", "1")], b"", {}),
        ("http://127.0.0.1:9/x", [], None, {}),
    ],
    ids=[
        "json",
        "https-default-port",
        "ipv6",
        "host",
        "length",
        "chunked",
        "default-host",
        "default-length",
        "no-host",
        "empty-body",
        "no-body",
    ],
)
def test_a_request_has_the_head_and_body_httpx2_builds(
    url: str, headers: list[tuple[str, str]], content: bytes | None, defaults: dict[str, str]
) -> None:
    """Exactly the head (names as written, in order) and body httpx2's own `build_request`
    gives, whether or not the request or the client's default headers name one of the headers
    httpx2 works out itself (`Host`, `Content-Length`, `Transfer-Encoding`)."""
    built = []
    for client_class in (ServiceHTTPClient, httpx2.AsyncClient):
        settings = options([])
        settings["headers"] = {**settings["headers"], **defaults}
        client = client_class(transport=Recording(), **settings)
        request = client.build_request("POST", url, headers=list(headers), content=content)
        built.append((request.headers.raw, request.content, type(request.stream)))
    assert built[0] == built[1]


def test_a_proxy_in_the_environment_takes_httpx2s_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert not needs_httpx_client()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert needs_httpx_client()
