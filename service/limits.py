"""Limits: bounds on a request's size and spend, and stream slots (at most N concurrent streams
per process, and per API key when keys are used).

`check_size` runs on what any body's shape counts up to (`RequestSize`), so every entry point
enforces the same bounds, each 422 naming the limit, its variable and the client's field.

A slot is taken before the upstream is called and given back exactly once when the response
ends, however it ends (completed, error, cancelled, shutdown): `StreamSlot.release` is
idempotent and `ChatStreamResponse` calls it in a `finally`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from service.domain import RequestSize, StreamRequest
from service.errors import InvalidRequest, TooManyStreams
from service.settings import Settings

_RETRY_AFTER_SECONDS = 1


def check_request(request: StreamRequest, settings: Settings) -> None:
    """`check_size` for the service's own request."""
    check_size(
        RequestSize(
            messages=len(request.messages),
            input_chars=sum(len(message.content) for message in request.messages),
            max_tokens=request.max_tokens,
        ),
        settings,
    )


def check_size(size: RequestSize, settings: Settings) -> None:
    """The configured bounds on size and spend (MAX_MESSAGES, MAX_INPUT_CHARS,
    MAX_OUTPUT_TOKENS)."""
    field = size.messages_field
    if size.messages > settings.max_messages:
        raise InvalidRequest(
            f"{field}: at most {settings.max_messages} messages are accepted "
            f"(MAX_MESSAGES), got {size.messages}",
            param=field,
        )
    if size.input_chars > settings.max_input_chars:
        raise InvalidRequest(
            f"{field}: at most {settings.max_input_chars} characters of content are accepted "
            f"(MAX_INPUT_CHARS), got {size.input_chars}",
            param=field,
        )
    if size.max_tokens is not None and size.max_tokens > settings.max_output_tokens:
        raise InvalidRequest(
            f"{size.max_tokens_field}: at most {settings.max_output_tokens} "
            f"(MAX_OUTPUT_TOKENS), got {size.max_tokens}",
            param=size.max_tokens_field,
        )


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
    def __init__(
        self,
        *,
        per_process: int,
        per_key: int | None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        """`on_reject` is told which limit refused a stream: `per_process` or `per_key`."""
        self._per_process = per_process
        self._per_key = per_key
        self._on_reject = on_reject
        self.active = 0
        self._by_key: Counter[str] = Counter()

    def acquire(self, key: str | None) -> StreamSlot:
        if self.active >= self._per_process:
            self._rejected("per_process")
            raise TooManyStreams(
                f"this server is at its limit of {self._per_process} concurrent streams",
                retry_after_seconds=_RETRY_AFTER_SECONDS,
            )
        if key is not None and self._per_key is not None and self._by_key[key] >= self._per_key:
            self._rejected("per_key")
            raise TooManyStreams(
                f"this API key is at its limit of {self._per_key} concurrent streams",
                retry_after_seconds=_RETRY_AFTER_SECONDS,
            )
        self.active += 1
        if key is not None:
            self._by_key[key] += 1
        return StreamSlot(self, key)

    def _rejected(self, limit: str) -> None:
        if self._on_reject is not None:
            self._on_reject(limit)

    def _give_back(self, key: str | None) -> None:
        self.active -= 1
        if key is not None:
            self._by_key[key] -= 1
            if not self._by_key[key]:
                del self._by_key[key]
