"""Stream slots: at most N concurrent streams per process, and per API key when keys are used.

A slot is taken before the upstream is called and given back exactly once when the response
ends, however it ends (completed, error, cancelled, shutdown): `StreamSlot.release` is
idempotent and `ChatStreamResponse` calls it in a `finally`.
"""

from __future__ import annotations

from collections import Counter

from service.errors import TooManyStreams

_RETRY_AFTER_SECONDS = 1


class StreamSlot:
    __slots__ = ("_key", "_limits", "_released")

    def __init__(self, limits: StreamLimits, key: str | None) -> None:
        self._limits = limits
        self._key = key
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limits._give_back(self._key)


class StreamLimits:
    def __init__(self, *, per_process: int, per_key: int | None) -> None:
        self._per_process = per_process
        self._per_key = per_key
        self.active = 0
        self._by_key: Counter[str] = Counter()

    def acquire(self, key: str | None) -> StreamSlot:
        if self.active >= self._per_process:
            raise TooManyStreams(
                f"this server is at its limit of {self._per_process} concurrent streams",
                retry_after_seconds=_RETRY_AFTER_SECONDS,
            )
        if key is not None and self._per_key is not None and self._by_key[key] >= self._per_key:
            raise TooManyStreams(
                f"this API key is at its limit of {self._per_key} concurrent streams",
                retry_after_seconds=_RETRY_AFTER_SECONDS,
            )
        self.active += 1
        if key is not None:
            self._by_key[key] += 1
        return StreamSlot(self, key)

    def _give_back(self, key: str | None) -> None:
        self.active -= 1
        if key is not None:
            self._by_key[key] -= 1
            if not self._by_key[key]:
                del self._by_key[key]
