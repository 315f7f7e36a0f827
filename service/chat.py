"""One chat stream, assembled: upstream -> metrics observer -> relay.

The routes own HTTP and translate their bodies into a `StreamRequest`; this owns which model is
asked and how the pieces are joined, so every entry point (POST and GET `/api/chat/stream`, and
the routes on the roadmap) builds the same stream.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import NamedTuple

from service.chunking import rechunk_words
from service.domain import CompletionParams, StreamRequest
from service.events import ResponseEvent
from service.metrics import StreamObserver, StreamRecorder, observe
from service.relay import relay
from service.settings import Settings
from service.timeouts import first_event_within
from service.upstream.base import ChatUpstream


def new_stream_id() -> str:
    return "chat-" + uuid.uuid4().hex


class OpenedStream(NamedTuple):
    stream_id: str
    events: AsyncGenerator[ResponseEvent, None]
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
        route: str,
        wire_format: str,
        word_chunks: bool = False,
    ) -> OpenedStream:
        """The stream's id, its response events and its recorder; nothing runs until the events
        are iterated. The caller reports how the response ended (`recorder.finish`), which
        every stream must: the observers count it as open until then. `route` (the route
        template) and `wire_format` (its name) label the stream's metrics."""
        stream_id = new_stream_id()
        model = self.upstream.resolve_model(request.model)
        params = CompletionParams(
            model=model,
            messages=request.messages,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
        )
        recorder = StreamRecorder(
            stream_id=stream_id,
            model=model,
            provider=self.upstream.provider,
            received_at=received_at,
            route=route,
            wire_format=wire_format,
            observers=self.observers,
        )
        upstream = first_event_within(
            self.upstream.stream(params), self.settings.first_token_timeout_seconds
        )
        events = relay(observe(upstream, recorder), recorder)
        return OpenedStream(stream_id, rechunk_words(events) if word_chunks else events, recorder)
