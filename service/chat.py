"""One chat stream, assembled: upstream -> time bounds (first token, idle, whole stream) ->
relay (which feeds the metrics recorder) -> word chunking, on request (`service.pipeline`).

The routes own HTTP and translate their bodies into a `StreamRequest` (or, for OpenAI's own APIs
relayed as they are, a `PassthroughRequest`); this owns which model is asked and how the pieces
are joined, so every entry point (POST and GET `/api/chat/stream`, `/v1/chat/completions`,
`/v1/responses`) builds the same stream, measured and cancelled the same way.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import NamedTuple

from service.chunking import WordRechunker
from service.deadline import Deadline
from service.domain import CompletionParams, PassthroughParams, PassthroughRequest, StreamRequest
from service.events import ResponseBatches, UpstreamBatch
from service.metrics import StreamObserver, StreamRecorder
from service.pipeline import ChatStream
from service.settings import Settings
from service.upstream.base import ChatUpstream


def new_stream_id() -> str:
    """`chat-` and 32 random hex digits (128 bits, as a UUID4 has 122): unguessable, since it
    is what a client resumes or stops the stream with. Without building a `uuid.UUID`, which
    costs more than the rest of the id's work per request (issue #16)."""
    return "chat-" + os.urandom(16).hex()


class OpenedStream(NamedTuple):
    stream_id: str
    # The response events, a batch per upstream read (`service.events.ResponseBatch`).
    events: ResponseBatches
    recorder: StreamRecorder


class ChatService:
    def __init__(
        self,
        settings: Settings,
        upstream: ChatUpstream,
        observers: tuple[StreamObserver, ...] = (),
    ) -> None:
        """`observers` watch every stream's record (metrics, traces)."""
        self.settings = settings
        self.upstream = upstream
        self.observers = observers

    def open_stream(
        self,
        request: StreamRequest,
        *,
        received_at: float,
        endpoint: str,
        word_chunks: bool = False,
    ) -> OpenedStream:
        """The stream's id, its response events and its recorder; nothing runs until the events
        are iterated. The caller reports how the response ended (`recorder.finish`), which
        every stream must: the observers count it as open until then. `endpoint` is the route
        (its template) that serves it."""
        model = self.upstream.resolve_model(request.model)
        params = CompletionParams(
            model=model,
            messages=request.messages,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
        )
        return self._open(
            self.upstream.stream(params),
            self._recorder(model, received_at, endpoint),
            first_token_deadline=True,
            rechunker=WordRechunker() if word_chunks else None,
        )

    def open_passthrough(
        self, request: PassthroughRequest, *, received_at: float, endpoint: str
    ) -> OpenedStream:
        """The same for an OpenAI API call relayed as it is. A non-streamed answer comes whole,
        so no first-token deadline applies to it (the upstream read timeout still does)."""
        model = self.upstream.resolve_model(request.model)
        params = PassthroughParams(request.api, request.body, model, request.stream)
        return self._open(
            self.upstream.passthrough(params),
            self._recorder(model, received_at, endpoint),
            first_token_deadline=request.stream,
        )

    def _recorder(self, model: str, received_at: float, endpoint: str) -> StreamRecorder:
        return StreamRecorder(
            stream_id=new_stream_id(),
            model=model,
            provider=self.upstream.provider,
            received_at=received_at,
            endpoint=endpoint,
            observers=self.observers,
        )

    def _open(
        self,
        upstream: AsyncGenerator[UpstreamBatch, None],
        recorder: StreamRecorder,
        *,
        first_token_deadline: bool,
        rechunker: WordRechunker | None = None,
    ) -> OpenedStream:
        settings = self.settings
        deadline = Deadline(
            settings.max_stream_seconds,
            settings.upstream_read_timeout_seconds,
            settings.first_token_timeout_seconds if first_token_deadline else None,
        )
        events = ChatStream(upstream, recorder, deadline, rechunker=rechunker)
        return OpenedStream(recorder.stream_id, events, recorder)
