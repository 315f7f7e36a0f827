"""The embedded demo model: a real streamed answer with no key, so a fresh clone works at once.

It paces word-sized tokens at a configurable rate after a configurable first-token delay, honours
`max_tokens` (finishing with `length`), and reports usage counted the same way, so everything
downstream of it (wire formats, metrics, cancellation) behaves exactly as with a real provider.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from service.events import Finished, TextDelta, UpstreamEvent, Usage, UsageReported
from service.upstream.base import CompletionParams

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


class DemoUpstream:
    """`ChatUpstream` that needs no network."""

    provider = "demo"

    def __init__(self, *, tokens_per_second: float, first_token_delay_seconds: float) -> None:
        self._interval = 1.0 / tokens_per_second
        self._first_token_delay = first_token_delay_seconds

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
