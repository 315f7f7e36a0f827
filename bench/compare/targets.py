"""What the comparison streams through: one entry per target, nothing else to change.

A target is a gateway (a key of `gateways.GATEWAYS`, or None for calling the upstream
directly), the path it serves chats on, and the request body it takes. Several targets may share
one gateway process (the service's two routes). A target whose route answers 404 is skipped
with a note, so a route that does not exist yet can already be listed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


def openai_body(text: str) -> bytes:
    """An OpenAI chat completions request, as any OpenAI SDK sends it."""
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text}],
            "stream": True,
        }
    ).encode()


def message_body(text: str) -> bytes:
    """The shorthand body of the service's own route and the tutorial relay."""
    return json.dumps({"message": text}).encode()


LITELLM_KEY = "sk-bench-0123456789abcdef"


@dataclass(frozen=True)
class Target:
    name: str
    gateway: str | None
    path: str
    body: Callable[[str], bytes]
    headers: dict[str, str] = field(default_factory=dict)


DIRECT = Target("direct", None, "/v1/chat/completions", openai_body)

TARGETS = [
    DIRECT,
    Target("floor", "floor", "/v1/chat/completions", openai_body),
    Target("service /api/chat/stream", "service", "/api/chat/stream", message_body),
    Target("service /v1/chat/completions", "service", "/v1/chat/completions", openai_body),
    Target("tutorial", "tutorial", "/chat", message_body),
    Target(
        "litellm",
        "litellm",
        "/v1/chat/completions",
        openai_body,
        {"Authorization": f"Bearer {LITELLM_KEY}"},
    ),
]
