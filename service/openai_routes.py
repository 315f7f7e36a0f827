"""The OpenAI API, relayed: a drop-in base URL for every OpenAI SDK (issue #8).

    POST /v1/chat/completions   streamed (SSE, `data: [DONE]` last) or not (one JSON answer)
    POST /v1/responses          streamed (the upstream's named events) or not
    GET  /v1/models             the upstream's list (or the default model alone)
    GET  /v1/models/{model}

Bodies go to the upstream as the client wrote them (`service.openai_requests`), and its events
come back as it wrote them (`service.wire.openai`); in between, every stream gets what the
service's own route gets: the service's key check (`Authorization: Bearer`, what the SDKs send as
`api_key`, never passed on), the limits and stream slots, the first-token deadline, heartbeats
while the model thinks, cancellation when the client leaves, the shutdown drain, and one log
record per stream. Errors are in OpenAI's shape (`service.error_responses`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import JSONResponse, Response

from service.domain import PassthroughRequest
from service.error_responses import OPENAI_PREFIX, openai_error_response
from service.errors import ModelNotFound
from service.http.request_route import RequestRoute
from service.http.stream_response import ChatStreamResponse
from service.limits import check_size
from service.openai_requests import parse_chat_completions, parse_responses
from service.runtime import RuntimeDep
from service.streaming import BEARER_SECURITY, CallerDep, caller_of, read_body, respond
from service.wire.base import Encoder
from service.wire.openai import (
    JSON_MEDIA_TYPE,
    SSE_MEDIA_TYPE,
    RelayedAnswerEncoder,
    RelayedEventsEncoder,
)

# The relay routes read their request by hand: called directly (service.http.request_route).
router = APIRouter(prefix=OPENAI_PREFIX, tags=["OpenAI API"], route_class=RequestRoute)

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_ERROR_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {JSON_MEDIA_TYPE: {"schema": _ERROR_OBJECT}}}
    for status, description in {
        400: "Invalid request (the parameter is named), or refused by the upstream",
        401: "SERVICE_API_KEYS are configured and no valid key was sent",
        404: "The upstream does not know the model",
        413: "The body exceeds MAX_BODY_BYTES",
        429: "Rate limited (upstream, or this server's stream limits); see Retry-After",
        501: "The upstream does not serve this API",
        502: "Upstream unreachable, failing, or refusing the service's credentials",
        503: "The server is shutting down: retry elsewhere",
        504: "Upstream timed out",
    }.items()
}


def _openapi_body(description: str) -> dict[str, Any]:
    """A relayed body's OpenAPI entries, and the bearer key the route reads by hand."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {JSON_MEDIA_TYPE: {"schema": _ANY_OBJECT}},
        },
        **BEARER_SECURITY,
    }


_RELAY_ROUTE: dict[str, Any] = {
    "status_code": 200,
    "response_class": ChatStreamResponse,
    "responses": {
        200: {
            "description": "The upstream's answer: SSE events when `stream` is true, else JSON",
            "content": {
                SSE_MEDIA_TYPE: {"schema": {"type": "string"}},
                JSON_MEDIA_TYPE: {"schema": _ANY_OBJECT},
            },
        },
        **_ERRORS,
    },
}


async def _relay_body(
    http_request: Request, parse: Callable[[bytes], PassthroughRequest]
) -> ChatStreamResponse:
    """Admit the caller (the key read by hand, `caller_of`: issue #16), read, parse and check
    the body, then relay it."""
    received_at = time.perf_counter()
    runtime, caller = caller_of(http_request)
    request = parse(await read_body(http_request, runtime.settings.max_body_bytes))
    check_size(request.size, runtime.settings)
    endpoint = "/v1/chat/completions" if request.api == "chat.completions" else "/v1/responses"

    def make_encoder(stream_id: str) -> Encoder:
        if not request.stream:
            return RelayedAnswerEncoder()
        chat = request.api == "chat.completions"
        return RelayedEventsEncoder(done_marker=chat, named_errors=not chat)

    return respond(
        runtime,
        caller,
        http_request.state,
        lambda: runtime.chat.open_passthrough(request, received_at=received_at, endpoint=endpoint),
        make_encoder,
        # The upstream's own events (`stream`: true) or its one JSON answer, relayed as they are.
        wire_format="openai-sse" if request.stream else "openai-json",
        render_error=openai_error_response,
    )


@router.post(
    "/chat/completions",
    summary="OpenAI chat completions, relayed (streamed or not)",
    openapi_extra=_openapi_body("Any OpenAI chat completions body; passed to the upstream as is"),
    **_RELAY_ROUTE,
)
async def chat_completions(request: Request) -> Response:
    return await _relay_body(request, parse_chat_completions)


@router.post(
    "/responses",
    summary="OpenAI Responses API, relayed (streamed or not)",
    openapi_extra=_openapi_body("Any OpenAI Responses body; passed to the upstream as is"),
    **_RELAY_ROUTE,
)
async def responses(request: Request) -> Response:
    return await _relay_body(request, parse_responses)


_MODEL_OBJECT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
}
_MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _ERRORS[status] for status in (401, 502, 503, 504)
}


@router.get(
    "/models",
    summary="The models the upstream lists (the default model where it lists none)",
    responses={
        200: {
            "description": "An OpenAI model list",
            "content": {
                JSON_MEDIA_TYPE: {
                    "schema": {
                        "type": "object",
                        "required": ["object", "data"],
                        "properties": {
                            "object": {"const": "list"},
                            "data": {"type": "array", "items": _MODEL_OBJECT},
                        },
                    }
                }
            },
        },
        **_MODEL_ERRORS,
    },
)
async def list_models(runtime: RuntimeDep, caller: CallerDep) -> JSONResponse:
    models = await runtime.chat.upstream.list_models()
    return JSONResponse({"object": "list", "data": models})


@router.get(
    "/models/{model:path}",
    summary="One model of the list",
    responses={
        200: {
            "description": "An OpenAI model",
            "content": {JSON_MEDIA_TYPE: {"schema": _MODEL_OBJECT}},
        },
        400: _ERRORS[400],
        404: _ERRORS[404],
        **_MODEL_ERRORS,
    },
)
async def retrieve_model(
    runtime: RuntimeDep,
    caller: CallerDep,
    model: Annotated[str, Path(min_length=1, max_length=200)],
) -> JSONResponse:
    for entry in await runtime.chat.upstream.list_models():
        if entry["id"] == model:
            return JSONResponse(entry)
    raise ModelNotFound(f"The model '{model}' does not exist", param="model")
