"""What every streaming endpoint shares: admission (keys, draining), the opening dependency,
the bounded body read, and turning a `StreamRequest` into a `ChatStreamResponse`.

An endpoint family (`/api/chat/stream`, `/api/chat`, ...) only translates its own body shape into
the domain's `StreamRequest` and calls `stream_response`, so limits, slots, metrics, heartbeats,
cancellation and shutdown behave the same on every route. The OpenAI passthrough (`/v1`, issue
#8), which relays bodies instead of translating them, calls `respond`, the part after the checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import State

from service.chat import OpenedStream
from service.domain import StreamRequest
from service.error_responses import ErrorRenderer, error_response
from service.errors import InvalidRequest, PayloadTooLarge, server_shutting_down
from service.http.stream_response import STREAM_ID_HEADER, ChatStreamResponse, StreamTiming
from service.limits import StreamSlot, check_request
from service.outcomes import Delivery
from service.runtime import Runtime, runtime_of
from service.wire.base import Encoder
from service.wire.formats import FORMATS, first_per_media_type
from service.wire.negotiate import choose_format
from service.wire.sse import is_finished_stream_id

Chunking = Literal["token", "word"]

_bearer = HTTPBearer(auto_error=False, description="One of SERVICE_API_KEYS, when configured")


_CHUNKINGS: tuple[Chunking, ...] = ("token", "word")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def admitted(runtime: Runtime, token: str | None) -> str | None:
    """The caller's key id (None when keys are off); 401 without a valid key, 503 when draining."""
    key_id = runtime.api_keys.identify(token)
    if runtime.shutdown.draining:
        raise server_shutting_down()
    return key_id


# Dependencies are `async def`: a plain `def` would cost a thread pool hop per request. The key
# is read as the stream routes read it (`caller_of`); the bearer scheme as a dependency only
# documents it.
async def admit(request: Request, _documents_the_key: BearerDep) -> str | None:
    return caller_of(request)[1]


CallerDep = Annotated[str | None, Depends(admit)]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer ...` header, else None: what `_bearer` (FastAPI's
    `HTTPBearer`, without its automatic error) resolves, read by hand on the stream routes."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if scheme.lower() == "bearer" and token else None


def caller_of(request: Request) -> tuple[Runtime, str | None]:
    """The runtime, and the caller's key id from the bearer key read by hand (or the refusal:
    401, 503); `admit` for the routes that take it as a dependency."""
    runtime = runtime_of(request.app)
    return runtime, admitted(runtime, bearer_token(request))


# The OpenAPI entry of a route that reads the bearer key by hand (`caller_of`,
# `open_stream_request`): FastAPI documents the scheme itself for the routes that keep it as a
# dependency (`CallerDep`), which `/v1/models` always does.
BEARER_SECURITY: dict[str, Any] = {"security": [{_bearer.scheme_name: []}]}

# The stream routes' query parameters, for the OpenAPI document: `open_stream_request` reads
# them itself (see there); `stream_parameters` picks a route's.
_PARAMETERS: dict[str, dict[str, Any]] = {
    "format": {
        "name": "format",
        "in": "query",
        "required": False,
        "description": "Wire format; overrides the Accept header",
        "schema": {"type": "string", "enum": list(FORMATS)},
    },
    "chunking": {
        "name": "chunking",
        "in": "query",
        "required": False,
        "description": "`word` re-cuts text on word boundaries; `token` passes it through",
        "schema": {"type": "string", "enum": list(_CHUNKINGS), "default": "token"},
    },
}


def stream_parameters(*names: str, key_read_by_hand: bool = True) -> dict[str, Any]:
    """The `openapi_extra` entries documenting the stream query parameters `names` a route
    takes (FastAPI adds them to the parameters it found itself), and its bearer key when the
    route reads it by hand (FastAPI documents it for a route with `OpeningDep`)."""
    parameters = {"parameters": [_PARAMETERS[name] for name in names]}
    return {**parameters, **BEARER_SECURITY} if key_read_by_hand else parameters


@dataclass(frozen=True, slots=True)
class StreamOpening:
    """What every stream route resolves before it reads its request: the parts, the caller,
    when the request arrived, and how the answer is to be shaped."""

    runtime: Runtime
    caller: str | None
    received_at: float
    format_name: str | None
    accept: str | None
    chunking: Chunking
    # A reconnecting EventSource that already has `[DONE]` (answered with 204).
    already_complete: bool
    # The request's own notes: the stream id goes here for the access log.
    request_state: State
    # The route's path template (`/api/chat/stream`, `/api/chat`): a bounded label.
    endpoint: str
    last_event_id: str | None = None
    # With REDIS_URL set, streams outlive a dropped connection unless `resumable=false`.
    resumable: bool = False

    @property
    def resume_options(self) -> set[str]:
        """The query parameters resumable streams add (none without REDIS_URL)."""
        return {"resumable"} if self.runtime.resume is not None else set()


def open_stream_request(request: Request) -> StreamOpening:
    """Everything a stream route needs before its body, read from the request by hand, the
    bearer key included: FastAPI resolving each query parameter, header, the key and the
    runtime as dependencies of their own cost ~4% of the whole request's CPU (issue #16,
    bench/RESULTS.md). A route documents the parameters it takes with `stream_parameters`, and
    the key with `BEARER_SECURITY`."""
    runtime, caller = caller_of(request)
    query = request.query_params
    chunking = query.get("chunking", "token")
    if chunking not in _CHUNKINGS:
        raise InvalidRequest("query.chunking: Input should be 'token' or 'word'")
    headers = request.headers
    last_event_id = headers.get("last-event-id")
    return StreamOpening(
        runtime=runtime,
        caller=caller,
        received_at=time.perf_counter(),
        format_name=query.get("format"),
        accept=headers.get("accept"),
        chunking="word" if chunking == "word" else "token",
        already_complete=is_finished_stream_id(last_event_id),
        request_state=request.state,
        last_event_id=last_event_id,
        resumable=runtime.resume is not None and _resumable(request),
        endpoint=getattr(request.scope.get("route"), "path", "other"),
    )


def _resumable(request: Request) -> bool:
    """The `resumable` query parameter (accepted only with REDIS_URL set), default true."""
    value = request.query_params.get("resumable", "true")
    if value not in ("true", "false"):
        raise InvalidRequest(f"resumable: must be true or false; got {value[:20]!r}")
    return value == "true"


# For the routes off the hot path (the stream routes call `open_stream_request` themselves):
# the bearer scheme as a dependency documents their key.
async def _opening(request: Request, _documents_the_key: BearerDep) -> StreamOpening:
    return open_stream_request(request)


OpeningDep = Annotated[StreamOpening, Depends(_opening)]

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {media: entry.openapi for media, entry in first_per_media_type().items()},
        "description": "The answer, in the negotiated format",
    },
    204: {"description": "EventSource reconnected after the stream's end: nothing more to send"},
    400: {"description": "Malformed JSON, or the upstream refused the request"},
    401: {"description": "SERVICE_API_KEYS are configured and no valid key was sent"},
    406: {"description": "No supported format in Accept"},
    413: {"description": "The body exceeds MAX_BODY_BYTES"},
    422: {"description": "The request names a bad field"},
    429: {"description": "Rate limited upstream; see Retry-After"},
    502: {"description": "Upstream unreachable, failing, or refusing our credentials"},
    503: {"description": "The server is shutting down: retry elsewhere"},
    504: {"description": "Upstream timed out"},
}
STREAM_ROUTE: dict[str, Any] = {
    "status_code": 200,
    "response_class": ChatStreamResponse,
    "responses": STREAM_RESPONSES,
}


def refuse_unknown_parameters(request: Request, allowed: set[str]) -> None:
    """Nothing a client sends is silently ignored: a misspelt parameter is a 422 naming it."""
    if not request.scope["query_string"]:
        return  # the usual POST: nothing to parse
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter(s): {', '.join(unknown)}; accepted: "
            + ", ".join(sorted(allowed))
        )
    repeated = sorted(
        name for name in request.query_params if len(request.query_params.getlist(name)) > 1
    )
    if repeated:
        raise InvalidRequest(f"query parameter(s) given more than once: {', '.join(repeated)}")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit`: from its declared
    `Content-Length`, or while a chunked body arrives (so it is never held in memory whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    return bytes(received)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body exceeds {limit} bytes (MAX_BODY_BYTES)")


async def stream_response(
    opening: StreamOpening,
    chat_request: StreamRequest,
    *,
    format_name: str | None = None,
    chat_id: str | None = None,
) -> ChatStreamResponse:
    """The response streaming `chat_request`, in `format_name` (an endpoint's own format) or
    else the one the request negotiated. Refuses before any upstream call: 422 beyond the size
    limits, 406 for an unproducible `Accept`, 429 at the stream limits. With REDIS_URL set, the
    stream is resumable (`service.resume`), and `chat_id` names it as that chat's active one."""
    runtime = opening.runtime
    settings = runtime.settings
    check_request(chat_request, settings)
    wire_format = FORMATS[format_name or choose_format(opening.format_name, opening.accept)]
    headers = {**wire_format.headers, "Vary": "Accept"}

    def open_stream() -> OpenedStream:
        return runtime.chat.open_stream(
            chat_request,
            received_at=opening.received_at,
            endpoint=opening.endpoint,
            word_chunks=opening.chunking == "word",
        )

    def make_encoder(stream_id: str) -> Encoder:
        return wire_format.make_encoder(settings, stream_id)

    if runtime.resume is None or not opening.resumable:
        return respond(
            runtime,
            opening.caller,
            opening.request_state,
            open_stream,
            make_encoder,
            wire_format=wire_format.name,
            headers=headers,
        )
    slot, opened = _take_slot_and_open(
        runtime, opening.caller, opening.request_state, open_stream, wire_format.name
    )
    try:
        followed = await runtime.resume.produce(
            opened, wire_format.name, slot, opening.caller, chat_id=chat_id
        )
    except BaseException:
        slot.release()
        await opened.events.aclose()
        raise
    if followed is None:  # the store cannot be reached: streamed directly
        return _response(runtime, opened, make_encoder, _recording(slot, opened), headers=headers)
    # The stream's producer outlives this response, and records the stream (issue #13).
    return _response(
        runtime,
        opened._replace(events=followed),
        make_encoder,
        _recorded_by_producer,
        headers={**headers, STREAM_ID_HEADER: opened.stream_id},
    )


def respond(
    runtime: Runtime,
    caller: str | None,
    request_state: State,
    open_stream: Callable[[], OpenedStream],
    make_encoder: Callable[[str], Encoder],
    *,
    wire_format: str,
    render_error: ErrorRenderer = error_response,
    headers: Mapping[str, str] | None = None,
) -> ChatStreamResponse:
    """The response for one stream of any endpoint family, once its request passed every check.
    A stream slot is taken last (429 when none is left) and given back however the response
    ends; the stream is recorded then. `wire_format` names the encoding for metrics;
    `render_error` shapes an error before the first event. The stream id goes into
    `request_state`, for the access log (`service.http.access_log`)."""
    slot, opened = _take_slot_and_open(runtime, caller, request_state, open_stream, wire_format)
    return _response(
        runtime,
        opened,
        make_encoder,
        _recording(slot, opened),
        render_error=render_error,
        headers=headers,
    )


def _take_slot_and_open(
    runtime: Runtime,
    caller: str | None,
    request_state: State,
    open_stream: Callable[[], OpenedStream],
    wire_format: str,
) -> tuple[StreamSlot, OpenedStream]:
    slot = runtime.stream_limits.acquire(caller)
    opened = open_stream()
    request_state.stream_id = opened.stream_id
    opened.recorder.wire_format = wire_format
    return slot, opened


def _recording(slot: StreamSlot, opened: OpenedStream) -> Callable[[Delivery], None]:
    def on_finish(delivery: Delivery) -> None:
        slot.release()
        opened.recorder.finish(delivery)

    return on_finish


def _recorded_by_producer(delivery: Delivery) -> None:
    """A resumable stream is recorded by its producer, not by one of its responses."""


def _response(
    runtime: Runtime,
    opened: OpenedStream,
    make_encoder: Callable[[str], Encoder],
    on_finish: Callable[[Delivery], None],
    *,
    render_error: ErrorRenderer = error_response,
    headers: Mapping[str, str] | None = None,
) -> ChatStreamResponse:
    return ChatStreamResponse(
        opened.events,
        make_encoder(opened.stream_id),
        timing=StreamTiming.from_settings(runtime.settings),
        on_finish=on_finish,
        on_heartbeat=opened.recorder.count_heartbeat,
        cut_off=runtime.shutdown,
        headers=headers,
        render_error=render_error,
    )
