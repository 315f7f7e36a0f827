"""The embedded demo model: a real streamed answer with no key, so a fresh clone works at once.

It paces word-sized tokens at a configurable rate after a configurable first-token delay, honours
`max_tokens` (finishing with `length`), and reports usage counted the same way, so everything
downstream of it (wire formats, metrics, cancellation) behaves exactly as with a real provider.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from service.domain import CompletionParams
from service.events import Finished, TextDelta, UpstreamEvent, Usage, UsageReported

if TYPE_CHECKING:
    from service.settings import Settings

_TOKEN = re.compile(r"\s*\S+|\s+")
_QUOTE_CHARS = 80

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

    async def aclose(self) -> None:
        return None

    async def stream(self, params: CompletionParams) -> AsyncGenerator[UpstreamEvent, None]:
        question = next(
            (m.content for m in reversed(params.messages) if m.role == "user"), "nothing"
        )
        question = " ".join(question.split())
        if len(question) > _QUOTE_CHARS:
            question = question[: _QUOTE_CHARS - 1] + "…"
        tokens = tokenize(_ANSWER.format(question=question))
        reason = "stop"
        if params.max_tokens is not None and params.max_tokens < len(tokens):
            tokens, reason = tokens[: params.max_tokens], "length"

        loop = asyncio.get_running_loop()
        start = loop.time() + self._first_token_delay
        for index, token in enumerate(tokens):
            # Absolute deadlines, so the pace does not drift with scheduling delays.
            await asyncio.sleep(max(0.0, start + index * self._interval - loop.time()))
            yield TextDelta(token)
        yield Finished(reason)
        prompt_tokens = sum(len(tokenize(m.content)) for m in params.messages)
        yield UsageReported(Usage(prompt_tokens, len(tokens), prompt_tokens + len(tokens)))
