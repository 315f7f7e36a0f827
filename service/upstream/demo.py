"""The embedded demo model: a real streamed answer with no key, so a fresh clone works at once.

It paces word-sized tokens at a configurable rate after a configurable first-token delay, honours
`max_tokens` (finishing with `length`), and reports usage counted the same way, so everything
downstream of it (wire formats, metrics, cancellation) behaves exactly as with a real provider.
It serves the `/v1` routes too, in OpenAI's own shapes (`service.upstream.demo_shapes`), read
back through the same decoders as a real upstream's events (`service.upstream.openai_events`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from service.domain import CompletionParams, PassthroughParams
from service.events import Finished, TextDelta, UpstreamBatch, Usage, UsageReported
from service.upstream import openai_events
from service.upstream.demo_shapes import ChatShapes, ResponseShapes, question_of

if TYPE_CHECKING:
    from service.settings import Settings

_TOKEN = re.compile(r"\s*\S+|\s+")
_QUOTE_CHARS = 80
# Choices the demo writes at most for `n` (OpenAI allows 128; the canned answer is the same).
_MAX_CHOICES = 8

_ANSWER = (
    'You asked: "{question}". I am the demo model built into this service, so my answer is '
    "canned, but it travels exactly the way a real one does. The service streams it to you "
    "token by token, measures the time to the first token and the tokens per second, and stops "
    "generating the moment you disconnect.\n\n"
    "To talk to a real model, set OPENAI_API_KEY (or OPENAI_BASE_URL for a local server such as "
    "Ollama or vLLM, or the AZURE_OPENAI_* variables) and restart. Everything else, including "
    "the wire format you are reading now, stays the same."
)


def tokenize(text: str) -> list[str]:
    """Word-sized pieces that join back to `text` exactly."""
    return _TOKEN.findall(text)


def build(settings: Settings, on_retry: Callable[[], None] | None = None) -> DemoUpstream:
    """The provider table's constructor (`service.upstream.providers`); the demo model never
    retries, so `on_retry` is never called."""
    return DemoUpstream(
        tokens_per_second=settings.demo_tokens_per_second,
        first_token_delay_seconds=settings.demo_first_token_delay_seconds,
    )


class DemoUpstream:
    """`ChatUpstream` that needs no network."""

    provider = "demo"
    is_demo = True

    def __init__(self, *, tokens_per_second: float, first_token_delay_seconds: float) -> None:
        self._interval = 1.0 / tokens_per_second
        self._first_token_delay = first_token_delay_seconds

    def resolve_model(self, requested: str | None) -> str:
        return "demo"  # whatever was asked for, the canned answer comes from here

    def startup_notice(self) -> tuple[int, str]:
        return logging.WARNING, (
            "no upstream configured (OPENAI_API_KEY, OPENAI_BASE_URL or AZURE_OPENAI_*): "
            "answering with the embedded demo model"
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _answer(self, question: str, max_tokens: int | None) -> tuple[list[str], str]:
        """The canned answer's tokens, cut at `max_tokens`, and the finish reason."""
        question = " ".join(question.split()) or "nothing"
        if len(question) > _QUOTE_CHARS:
            question = question[: _QUOTE_CHARS - 1] + "…"
        tokens = tokenize(_ANSWER.format(question=question))
        if max_tokens is not None and max_tokens < len(tokens):
            return tokens[:max_tokens], "length"
        return tokens, "stop"

    async def _paced(self, tokens: Sequence[str]) -> AsyncGenerator[str, None]:
        """`tokens` at the configured pace, after the first-token delay."""
        loop = asyncio.get_running_loop()
        start = loop.time() + self._first_token_delay
        for index, token in enumerate(tokens):
            # Absolute deadlines, so the pace does not drift with scheduling delays.
            await asyncio.sleep(max(0.0, start + index * self._interval - loop.time()))
            yield token

    async def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamBatch, None]:
        question = next((m.content for m in reversed(params.messages) if m.role == "user"), "")
        tokens, reason = self._answer(question, params.max_tokens)
        async for token in self._paced(tokens):
            yield [TextDelta(token)]
        prompt_tokens = sum(len(tokenize(m.content)) for m in params.messages)
        usage = Usage(prompt_tokens, len(tokens), prompt_tokens + len(tokens))
        yield [Finished(reason), UsageReported(usage)]

    async def passthrough(self, params: PassthroughParams) -> AsyncGenerator[UpstreamBatch, None]:
        body = params.body
        question = question_of(body)
        limit = _int_field(body, "max_output_tokens", "max_completion_tokens", "max_tokens")
        tokens, reason = self._answer(question, limit)
        prompt_tokens = len(tokenize(question))
        usage = Usage(prompt_tokens, len(tokens), prompt_tokens + len(tokens))
        if not params.stream:
            async for _ in self._paced(tokens):  # a real model takes its time for it too
                pass
            text = "".join(tokens)
            if params.api == "chat.completions":
                answer = ChatShapes(params.model, _choices(body)).completion(text, reason, usage)
            else:
                cut = "max_output_tokens" if reason == "length" else None
                answer = ResponseShapes(params.model, body).whole(text, usage, cut)
            yield [openai_events.answer_decoder(params.api)(answer, secrets=())]
            return
        decode = openai_events.event_decoder(
            params.api, openai_events.asks_for_usage(body), secrets=()
        )
        if params.api == "chat.completions":
            chat = ChatShapes(params.model, _choices(body))
            first = True
            async for token in self._paced(tokens):
                yield [decode(None, p) for p in (chat.role() if first else []) + chat.text(token)]
                first = False
            yield [decode(None, p) for p in [*chat.finish(reason), chat.usage(usage)]]
            return
        response = ResponseShapes(params.model, body)
        first = True
        async for token in self._paced(tokens):
            opening = response.opening() if first else []
            yield [decode(name, payload) for name, payload in [*opening, response.delta(token)]]
            first = False
        cut = "max_output_tokens" if reason == "length" else None
        yield [decode(name, payload) for name, payload in response.closing(usage, cut)]

    async def list_models(self) -> list[dict[str, Any]]:
        return [openai_events.model_entry("demo", "demo")]


def _int_field(body: dict[str, Any], *names: str) -> int | None:
    """The first of `names` that holds a positive integer."""
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _choices(body: dict[str, Any]) -> int:
    return min(_int_field(body, "n") or 1, _MAX_CHOICES)
