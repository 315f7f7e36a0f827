"""Upstream text made safe to pass on: one short line, nothing key-shaped in it.

Upstream error messages reach clients (a 400's reason, a mid-stream error), and providers echo
keys in them: OpenAI prints a masked key in its 401 message, some compatible servers echo it
whole. So the service's own secrets are removed verbatim, and then anything key-shaped:
OpenAI-style `sk-...` keys, and any run of 32 or more letters and digits (Azure keys are 32 hex
digits). Redaction happens before truncation, so a secret cut in two is still found whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_MESSAGE_CHARS = 500
REDACTED = "[redacted]"
_SECRET_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*]{8,}|\b[A-Za-z0-9]{32,}\b")


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _SECRET_PATTERN.sub(REDACTED, text)


def safe_message(body: object, *, secrets: Iterable[str], fallback: str) -> str:
    """The upstream's reason from an error body (`{"error": {"message"}}` or `{"message"}`),
    reduced to one short line with anything key-shaped removed; `fallback` when it has none."""
    message: object = fallback
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = inner["message"]
    text = redact(" ".join(str(message).split()), secrets)
    return text[:MAX_MESSAGE_CHARS] or fallback
