"""Upstream text made safe to pass on: one short line, nothing key-shaped in it.

Upstream error messages reach clients (a 400's reason, a mid-stream error), and providers echo
credentials in them: OpenAI's 401 prints the key with its middle starred
(`sk-proj-abc*****xyz9`), other providers and gateways print a prefix and a suffix around an
ellipsis (`sk-tes...6789`, `gsk_…9f0c`), some compatible servers print the key whole. Removed,
in this order:

1. the service's own secrets, verbatim;
2. masked forms (issue #11): a key-like prefix, an ellipsis (`...`, `…`) or a run of `*`, a
   key-like suffix, when the prefix starts like a key (`sk-`, `gsk_`, `xai-`, ...) or the whole
   holds a digit (ordinary prose such as `again...later` is left alone);
3. OpenAI-style keys (`sk-` and 8 or more key characters, stars included) and any run of 32 or
   more letters and digits (Azure keys are 32 hex digits).

Redaction happens before truncation, so a secret cut in two is still found whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_MESSAGE_CHARS = 500
REDACTED = "[redacted]"

_KEY_CHARS = r"[A-Za-z0-9_\-]"
_MASKED = re.compile(
    rf"(?<![A-Za-z0-9_\-])({_KEY_CHARS}{{2,}})(?:\.{{2,}}|\u2026|\*{{3,}})({_KEY_CHARS}{{2,}})"
)
_KEY_PREFIX = re.compile(r"(?:sk|gsk|xai|pk|rk|key|api|token)[-_]", re.IGNORECASE)
_WHOLE_KEYS = re.compile(r"\bsk-[A-Za-z0-9_\-*]{8,}|\b[A-Za-z0-9]{32,}\b")


def _masked_key(match: re.Match[str]) -> str:
    prefix, suffix = match.group(1), match.group(2)
    if _KEY_PREFIX.match(prefix) or any(char.isdigit() for char in prefix + suffix):
        return REDACTED
    return match.group(0)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every key-shaped part replaced by `[redacted]`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _MASKED.sub(_masked_key, text)
    return _WHOLE_KEYS.sub(REDACTED, text)


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
