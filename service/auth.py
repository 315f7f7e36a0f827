"""Optional service API keys: `Authorization: Bearer <key>`.

Every configured key is compared, in constant time (`hmac.compare_digest`), whatever matches
first, so timing tells nothing about which key or how much of it was right. A missing and a wrong
key get the same 401 body. The caller is identified by the key's position in the configuration
(`key-1`, ...), never by the key itself, so limits and logs can name it safely.
"""

from __future__ import annotations

import hmac

from service.errors import Unauthorized

_MESSAGE = "a valid API key is required: send Authorization: Bearer <key>"


class APIKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, token: str | None) -> str | None:
        """The caller's key id, from the Bearer token it sent (`None` if it sent none); `None`
        when keys are not configured; `Unauthorized` otherwise."""
        if not self._keys:
            return None
        presented = (token or "").strip().encode()
        matched = None
        for index, key in enumerate(self._keys, start=1):
            if hmac.compare_digest(presented, key) and matched is None:
                matched = f"key-{index}"
        if matched is None:
            raise Unauthorized(_MESSAGE)
        return matched
