"""Resuming and stopping streams (issue #13); registered only when REDIS_URL is set.

- `GET /api/chat/stream/{stream_id}`: the events after the client's last one (the
  `Last-Event-ID` header, else the `last_event_id` query parameter for clients that cannot set
  headers; none: from the start), then live, in the format the stream was started in.
- `GET /api/chat/{chat_id}/stream`: the AI SDK `useChat({resume: true})` reconnect: the
  chat's active stream, whole, from its `start` (the SDK rebuilds the message); 204 when none.
- `POST /api/chat/{stream_id}/stop`: stops the stream at once, whichever replica produces it
  (a `useChat` chat id stops that chat's active stream).

A browser's `EventSource` reconnecting to the URL that started a stream resumes too
(`service.routes`). With `SERVICE_API_KEYS`, only the key that started a stream can resume or
stop it; to any other it does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import JSONResponse, Response

from service.errors import InvalidRequest
from service.resume.hub import ResumableStreams
from service.runtime import Runtime, RuntimeDep
from service.streaming import CallerDep, OpeningDep, refuse_unknown_parameters
from service.wire.sse import DONE_ID_SUFFIX

router = APIRouter()

StreamIdPath = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="The stream's id: the `id` of its `start` event, or its X-Stream-Id header",
    ),
]


def parse_last_event_id(value: str, stream_id: str) -> int | None:
    """The number of the client's last event (`<stream id>:<n>` or `<n>`), or None when it
    says the client has the end marker (`<stream id>:done`)."""
    value = value.strip()
    prefix, colon, number = value.rpartition(":")
    if colon and prefix != stream_id:
        raise InvalidRequest(f"Last-Event-ID {value[:120]!r} belongs to another stream")
    if colon + number == DONE_ID_SUFFIX:
        return None
    if not number.isdigit() or len(number) > 9:
        raise InvalidRequest(
            f"Last-Event-ID must be <stream id>:<event number>; got {value[:120]!r}"
        )
    return int(number)


def _resume(runtime: Runtime) -> ResumableStreams:
    assert runtime.resume is not None  # this router is registered only with it
    return runtime.resume


@router.get(
    "/api/chat/stream/{stream_id}",
    summary="Resume a stream after the client's last event (Last-Event-ID), then follow it live",
    response_class=Response,
    responses={
        200: {"description": "The missed events, then the live ones, in the stream's format"},
        204: {"description": "The client already has the whole stream"},
        404: {"description": "No such stream (or it expired, or another API key started it)"},
        410: {"description": "The events to resume from are no longer stored"},
        503: {"description": "The stream store cannot be reached, or the server is shutting down"},
    },
)
async def resume_stream(
    request: Request,
    stream_id: StreamIdPath,
    opening: OpeningDep,
    last_event_id: Annotated[
        str | None,
        Query(max_length=200, description="For clients that cannot send the Last-Event-ID header"),
    ] = None,
) -> Response:
    refuse_unknown_parameters(request, {"last_event_id"})
    given = opening.last_event_id if opening.last_event_id is not None else last_event_id
    after = -1 if given is None else parse_last_event_id(given, stream_id)
    if after is None:
        return Response(status_code=204)
    resume = _resume(opening.runtime)
    return await resume.respond(stream_id, after, opening.caller, request.is_disconnected)


@router.get(
    "/api/chat/{chat_id}/stream",
    summary="Resume a useChat chat's active stream (AI SDK UI message stream, from its start)",
    response_class=Response,
    responses={
        200: {"description": "The chat's active stream, from `start`, then live"},
        204: {"description": "The chat has no active stream"},
        503: {"description": "The stream store cannot be reached"},
    },
)
async def resume_chat(
    request: Request,
    chat_id: Annotated[str, Path(min_length=1, max_length=200, description="useChat's chat id")],
    runtime: RuntimeDep,
    caller: CallerDep,
) -> Response:
    refuse_unknown_parameters(request, set())
    return await _resume(runtime).respond_to_chat(chat_id, caller)


@router.post(
    "/api/chat/{stream_id}/stop",
    summary="Stop a stream now, whichever replica produces it",
    responses={
        202: {"description": "Asked to stop; its end was not confirmed in time"},
        404: {"description": "No such stream (or it expired, or another API key started it)"},
        503: {"description": "The stream store cannot be reached"},
    },
)
async def stop_stream(
    stream_id: StreamIdPath, runtime: RuntimeDep, caller: CallerDep
) -> JSONResponse:
    status = await _resume(runtime).stop(stream_id, caller)
    body: dict[str, Any] = {"stream_id": stream_id, "status": status}
    return JSONResponse(body, status_code=202 if status == "stopping" else 200)
