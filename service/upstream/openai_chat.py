"""The OpenAI-compatible upstream: the only module that imports `openai`.

Requests go through the SDK, so its auth, retries with backoff (honouring `Retry-After`), Azure
URL and `api-version` handling, and status-error classes all apply. They are made with its
low-level `post` (`_post`), and the body is taken raw, straight from the transport's connection
(`service.upstream.transport`), and decoded by `service.upstream.answer_stream` (read, or pushed
as it arrives: `service.push`): the SDK's typed stream builds a pydantic chunk per token, which
costs more than the service's whole per-token budget (`bench/parse_cost.py` prints both).
Only the fields the service uses are read, with guards for every shape providers send: Azure's
first chunk and the usage chunk have `choices: []`, Azure's asynchronous filter sends
choices with no `delta`, and a provider may report an error as a `data:` object mid-stream.

The transport is told to take the upstream's bytes as they are: `Accept-Encoding: identity`, a
compressed body refused before any of it is read (inflating happens in one synchronous call per
read, so a small gzip bomb would hold the event loop for seconds: issue #11), and redirects
never followed (an OpenAI-compatible API does not redirect a completion; following one would
re-send the key, or turn the POST into a GET).

The OpenAI-compatible routes (issue #8) go through here too (`passthrough`, `list_models`): the
client's body is sent as it came, with the model resolved and usage always asked for, and each
upstream event is relayed as its own bytes (`service.upstream.openai_events` reads the few facts
the metrics need). Events before the first output (the role chunk, Azure's prompt filter
results, `response.created`) are held back until the first output, so that the response's
status still says whether the upstream accepted the request.

Errors are translated into `service.errors` here and nowhere else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import Any

import httpx2
import openai

from service.domain import CompletionParams, OpenAIApi, PassthroughParams
from service.errors import (
    NotServedUpstream,
    ServiceError,
    UpstreamAuthFailed,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.events import (
    Failed,
    UpstreamBatch,
)
from service.settings import Settings
from service.upstream import openai_events
from service.upstream.answer_stream import AnswerStream, ChatDecoder, RelayDecoder
from service.upstream.http_client import ServiceHTTPClient, needs_httpx_client
from service.upstream.redaction import redact, safe_message
from service.upstream.sse_decoder import EventTooLarge
from service.upstream.transport import HTTP1Transport

_MAX_RETRY_AFTER_SECONDS = 3600
# A non-streamed answer (or model list) larger than this is refused rather than held in memory.
_MAX_BODY_BYTES = 32 * 1024 * 1024
# Connections to the upstream, as the SDK's own clients allow (openai._constants), and how long
# an idle one is kept (httpx's default keep-alive expiry).
_MAX_CONNECTIONS = 1000
_KEEPALIVE_SECONDS = 5.0

logger = logging.getLogger("service.upstream")


def build_client(
    settings: Settings, on_retry: Callable[[], None] | None = None
) -> openai.AsyncOpenAI:
    """The SDK client for the configured provider; never called for the demo model.
    `on_retry` is called each time the SDK sends a request again (its retries)."""
    timeout = openai.Timeout(
        settings.upstream_read_timeout_seconds,
        connect=settings.upstream_connect_timeout_seconds,
    )
    transport_options: dict[str, Any] = {
        "timeout": timeout,
        "headers": {"Accept-Encoding": "identity"},
        "follow_redirects": False,  # the SDK's default clients follow them
        "event_hooks": {
            "request": [_retry_counter(on_retry)] if on_retry is not None else [],
            "response": [_refuse_compressed],
        },
    }
    http_client: httpx2.AsyncClient
    if settings.upstream_http_client != "builtin":
        http_client = openai.DefaultAsyncHttpxClient(**transport_options)
    else:
        # The SDK's connection limits; stream bodies read straight from the connection.
        transport = HTTP1Transport(
            max_connections=_MAX_CONNECTIONS, keepalive_seconds=_KEEPALIVE_SECONDS
        )
        # httpx2's own client only for a proxy, which it mounts a transport for.
        client_class = httpx2.AsyncClient if needs_httpx_client() else ServiceHTTPClient
        http_client = client_class(transport=transport, **transport_options)
    if settings.provider == "azure":  # this module serves two entries of the provider table
        assert settings.azure_openai_endpoint
        assert settings.azure_openai_api_key
        return openai.AsyncAzureOpenAI(
            azure_endpoint=settings.azure_openai_endpoint,
            api_key=settings.azure_openai_api_key.get_secret_value(),
            api_version=settings.azure_openai_api_version,
            timeout=timeout,
            max_retries=settings.upstream_max_retries,
            http_client=http_client,
        )
    # A local server (Ollama, vLLM) usually wants no key, but the SDK insists on one.
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "unused"
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_retries=settings.upstream_max_retries,
        http_client=http_client,
    )


# The paths `_post` sends to.
_PATHS = ("/chat/completions", "/responses")


def _joined(base_url: httpx2.URL, path: str) -> str:
    """The URL the SDK sends `path` to, as its client joins it to `base_url` (which it always
    ends with a slash) on each request."""
    return str(base_url.copy_with(raw_path=base_url.raw_path + path.lstrip("/").encode()))


def _retry_counter(on_retry: Callable[[], None]) -> Callable[[httpx2.Request], Awaitable[None]]:
    """An HTTP client hook that calls `on_retry` for each request the SDK repeats. The SDK
    numbers its attempts in the `x-stainless-retry-count` header of each request it sends
    (0 for the first); the hook runs once per upstream request, never per token."""

    async def count(request: httpx2.Request) -> None:
        if request.headers.get("x-stainless-retry-count", "0") != "0":
            on_retry()

    return count


def build(settings: Settings, on_retry: Callable[[], None] | None = None) -> OpenAIChatUpstream:
    """The provider table's constructor (`service.upstream.providers`)."""
    return OpenAIChatUpstream(settings, build_client(settings, on_retry))


class CompressedBody(openai.OpenAIError):
    """The upstream compressed its body although asked not to. An `OpenAIError`, so the SDK
    passes it on as it is instead of retrying it as a connection failure."""


async def _refuse_compressed(response: httpx2.Response) -> None:
    """httpx2 response hook: runs on the headers, before any of the body is read or inflated."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise CompressedBody(
            f"the upstream compressed its response (Content-Encoding: {encoding[:40]}) although "
            "the service asks for identity; it does not inflate upstream bodies"
        )


class OpenAIChatUpstream:
    """`ChatUpstream` over the OpenAI chat completions API (OpenAI, Azure, compatible servers)."""

    is_demo = False

    def __init__(self, settings: Settings, client: openai.AsyncOpenAI | None = None) -> None:
        self.provider: str = settings.provider
        self._default_model = settings.model_name
        self._responses_not_served = (
            "the upstream does not serve the Responses API (it answered 404 to /responses): "
            + (
                "Azure OpenAI serves it from API version 2025-03-01-preview on; set "
                f"AZURE_OPENAI_API_VERSION (now {settings.azure_openai_api_version})"
                if settings.provider == "azure"
                else "set OPENAI_BASE_URL to a server that does (OpenAI, or a recent vLLM or "
                "Ollama)"
            )
            + ", or use /v1/chat/completions"
        )
        self._client = client or build_client(settings)
        self._urls = (
            {}
            if isinstance(self._client, openai.AsyncAzureOpenAI)
            else {path: _joined(self._client.base_url, path) for path in _PATHS}
        )
        self._include_usage = settings.upstream_include_usage
        self._secrets = tuple(
            secret.get_secret_value()
            for secret in (settings.openai_api_key, settings.azure_openai_api_key)
            if secret is not None
        )

    def resolve_model(self, requested: str | None) -> str:
        return requested or self._default_model

    def startup_notice(self) -> tuple[int, str]:
        return logging.INFO, (
            f"streaming from {self.provider}, default model {self._default_model}"
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        await self._client.close()

    def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamBatch, None]:
        body: dict[str, Any] = {
            "model": params.model,
            "messages": [{"role": m.role, "content": m.content} for m in params.messages],
            "stream": True,
        }
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        return AnswerStream(
            partial(self._post, "/chat/completions", body),
            ChatDecoder(self._secrets),
            self._failure_of,
        )

    def passthrough(self, params: PassthroughParams) -> AsyncGenerator[UpstreamBatch, None]:
        body, forward_usage = self._passthrough_body(params)
        path = "/chat/completions" if params.api == "chat.completions" else "/responses"
        if not params.stream:
            return self._whole_answer(path, body, params.api)
        return AnswerStream(
            partial(self._post, path, body),
            RelayDecoder(openai_events.event_decoder(params.api, forward_usage, self._secrets)),
            partial(self._failure_of, api=params.api),
        )

    async def _whole_answer(
        self, path: str, body: dict[str, Any], api: OpenAIApi
    ) -> AsyncGenerator[UpstreamBatch, None]:
        """A non-streamed answer: one batch of one `Relayed` (the whole body), or `Failed`."""
        try:
            response = await self._post(path, body)
            try:
                answer = await _read_body(response)
            finally:
                await response.aclose()
            yield [openai_events.answer_decoder(api)(answer, secrets=self._secrets)]
        except Exception as error:
            yield [Failed(self._failure_of(error, api))]

    def _passthrough_body(self, params: PassthroughParams) -> tuple[dict[str, Any], bool]:
        """The body to send (the client's, with the resolved model and, for a chat stream,
        usage asked for) and whether the client itself asked for the usage chunk."""
        body = dict(params.body)
        body["model"] = params.model
        if params.api != "chat.completions" or not params.stream:
            return body, True
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            return body, True  # the upstream will say what is wrong with it
        if openai_events.asks_for_usage(body):
            return body, True
        if self._include_usage:
            body["stream_options"] = {**(options or {}), "include_usage": True}
        return body, False

    async def _post(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        """The raw response to `body` posted to `path`, its body unread: the caller closes it.

        Through the SDK's documented low-level call for what the typed methods do not fit
        (`client.post(..., cast_to=httpx.Response)`, "undocumented endpoints" in its README):
        the same auth, retries, status errors and Azure deployment URLs as the typed methods,
        without their per-request walk of the parameters against the SDK's TypedDicts (issue
        #16: ~80 µs of CPU per request) or the response and stream wrappers it would build
        around a body that is read here, and without their typed chunks, which would cost more
        per token than the service's whole budget (`bench/parse_cost.py`). Azure's client builds
        the deployment URL from `model`, so it is given the path; any other client the whole
        URL, which its `post` takes as it is (as for a next page's URL) instead of joining it to
        the base URL again. The options the SDK would otherwise fill with copies of its
        defaults are given as the client's own values (issue #16: both ~2% of the
        instructions of a request)."""
        return await self._client.post(
            self._urls.get(path, path),
            body=body,
            cast_to=httpx2.Response,
            stream=True,
            # New each time (the SDK must not see one request's options in the next).
            options={
                "params": {},
                "headers": {},
                "max_retries": self._client.max_retries,
                "timeout": self._client.timeout,
            },
        )

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's model list; the default model alone where there is none (Azure lists
        base models, not the deployments a request names; some local servers answer 404)."""
        default = [openai_events.model_entry(self._default_model, self.provider)]
        if self.provider == "azure":
            return default
        try:
            async with self._client.models.with_streaming_response.list() as response:
                body = await _read_body(response.http_response)
        except openai.NotFoundError:
            return default
        except Exception as error:
            raise self._failure_of(error) from None
        return openai_events.models_of(body) or default

    def _failure_of(self, error: Exception, api: OpenAIApi | None = None) -> ServiceError:
        """Any exception from the SDK or the transport, as the service's error. Whatever an
        upstream does, a stream ends with a `Failed`, never an escaping exception
        (upstream/base.py)."""
        if isinstance(error, openai.APIStatusError):
            return self._status_error(error, api)
        # The raw body raises the transport's own exceptions (the SDK maps them only in its
        # typed stream), so both families are translated here.
        if isinstance(error, openai.APIConnectionError | httpx2.RequestError | TimeoutError):
            return _transport_failure(error)
        if isinstance(error, EventTooLarge | BodyTooLarge | CompressedBody):
            return UpstreamUnavailable(str(error))
        # The details go to the log, not to the client.
        logger.error("unexpected failure reading the upstream", exc_info=error)
        return UpstreamUnavailable("the upstream sent a response the service cannot read")

    def _status_error(
        self, error: openai.APIStatusError, api: OpenAIApi | None = None
    ) -> ServiceError:
        status = error.status_code
        if status in (401, 403):
            # The service's own credentials are wrong: say so without any upstream text, which
            # may echo (part of) the key.
            return UpstreamAuthFailed("the upstream rejected the service's credentials")
        if status == 429 and _error_code(error.body) == "insufficient_quota":
            # Billing, not load: retrying will not help.
            return UpstreamQuotaExhausted("the upstream account has exhausted its quota")
        if status == 429:
            return UpstreamRateLimited(
                "the upstream is rate limiting requests",
                retry_after_seconds=_retry_after_seconds(error.response.headers) or 1,
            )
        if status == 408:
            return UpstreamTimeout("the upstream timed out")
        if 300 <= status < 400:
            # The target is not echoed: it is the upstream's to tell, and may carry a token.
            return UpstreamUnavailable(
                f"the upstream answered with a redirect (status {status}), which the service "
                "does not follow; check the upstream base URL (https, path)",
                upstream_status=status,
            )
        # The SDK hands over the body's `error` object (or the whole body when it has none).
        inner = error.body.get("error", error.body) if isinstance(error.body, dict) else None
        if status == 404 and api == "responses" and not _is_api_error(inner):
            # Not an API error about this request (an unknown model would say so): the server
            # has no such endpoint.
            return NotServedUpstream(self._responses_not_served)
        if 400 <= status < 500:
            return UpstreamRejected(
                safe_message(error.body, secrets=self._secrets, fallback=error.message),
                upstream_status=status,
                param=self._identifier(inner, "param"),
                code=self._identifier(inner, "code"),
            )
        # A 503's `Retry-After` says when to come back: the router's cooldown honours it
        # (`service.upstream.health`); the client's 502 does not repeat it (see the class).
        return UpstreamUnavailable(
            f"the upstream failed with status {status}",
            upstream_status=status,
            upstream_retry_after_seconds=_retry_after_seconds(error.response.headers),
        )

    def _identifier(self, inner: object, name: str) -> str | None:
        """A short field of an upstream error (`param`, `code`), passed on to `/v1` clients."""
        value = inner.get(name) if isinstance(inner, dict) else None
        if not isinstance(value, str) or not value or len(value) > 100:
            return None
        return redact(value, self._secrets)


class BodyTooLarge(ValueError):
    """A non-streamed upstream body exceeded `_MAX_BODY_BYTES`."""


async def _read_body(response: httpx2.Response) -> bytes:
    """A whole (non-streamed) upstream body, refused once it exceeds `_MAX_BODY_BYTES`."""
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk
        if len(received) > _MAX_BODY_BYTES:
            raise BodyTooLarge(f"the upstream's answer exceeds {_MAX_BODY_BYTES} bytes")
    return bytes(received)


def _transport_failure(error: BaseException) -> ServiceError:
    """Timeout or unreachable, decided by the root cause where it is the OS's own exception (our
    transport keeps it as the cause): a `TimeoutError` or not. Otherwise the SDK's or httpx2's
    class says."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, OSError):
        timed_out = isinstance(root, TimeoutError)
    else:
        timed_out = isinstance(error, openai.APITimeoutError | httpx2.TimeoutException)
    if timed_out:
        return UpstreamTimeout("the upstream did not answer in time")
    return UpstreamUnavailable("the upstream could not be reached or broke off")


def _is_api_error(inner: object) -> bool:
    """Whether an error body is an OpenAI-style API error (`{"message": "...", ...}`), which a
    server sends about a request, rather than a bare 404 page."""
    return isinstance(inner, dict) and isinstance(inner.get("message"), str)


def _error_code(body: object) -> object:
    inner = body.get("error", body) if isinstance(body, dict) else None
    return inner.get("code") if isinstance(inner, dict) else None


def _retry_after_seconds(headers: Any) -> int | None:
    """Whole seconds from `retry-after-ms` or `retry-after`, between 1 and an hour; None when
    absent or unreadable (an HTTP date is rare from model providers)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return min(_MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(seconds)))
    return None
