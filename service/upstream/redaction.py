"""Keys cut out of upstream text before any of it reaches a client or a log.

Upstream error messages echo credentials: OpenAI's 401 prints the key with its middle starred
(`sk-proj-abc*****xyz9`), other providers and gateways print a prefix and a suffix around an
ellipsis (`sk-tes...6789`, `gsk_…9f0c`), some compatible servers print the key whole. Removed,
in this order (issue #11):

1. the service's own secrets, verbatim;
2. masked forms: a key-like prefix, an ellipsis (`...`, `…`) or a run of `*`, a key-like suffix,
   when the prefix starts like a key (`sk-`, `gsk_`, `xai-`, ...) or the whole holds a digit
   (ordinary prose such as `again...later` is left alone);
3. OpenAI-style keys (`sk-` and 8 or more key characters, stars included) and any run of 32 or
   more letters and digits (Azure keys are 32 hex digits).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every key-shaped part replaced by `[redacted]`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _MASKED.sub(_masked_key, text)
    return _WHOLE_KEYS.sub(REDACTED, text)
