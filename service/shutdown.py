"""Graceful shutdown: drain, give open streams a grace period, then end the rest in-band.

On SIGTERM (`begin`): new streams are refused with 503 and `/readyz` fails, so orchestrators
stop routing here; open streams go on. When `grace_seconds` have passed, `grace_expired` is set
and every stream still open ends with an in-band `server_shutting_down` error and its format's
end marker (`ChatStreamResponse`), closing its upstream request. uvicorn itself stops accepting
connections at the signal and exits once the last response is complete; its own
`timeout_graceful_shutdown` is set a little longer than the grace period, as a backstop.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType


class ShutdownCoordinator:
    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.draining = False
        self.grace_expired = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_expiry: set[Callable[[], None]] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the loop the app runs on (at start-up)."""
        self._loop = loop

    def begin(self) -> None:
        """Start draining. Safe from a signal handler or another thread: the timer is armed on
        the loop."""
        if self.draining:
            return
        self.draining = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._arm)

    def begin_on_signals(self) -> Callable[[], None]:
        """Begin draining when SIGTERM or SIGINT arrives, then hand the signal to the handler
        that was installed before (uvicorn's, which stops accepting connections and waits for
        open ones). Works in every uvicorn worker process, which is why this chains the server's
        handler rather than subclassing its `Server`: uvicorn's supervisor builds each worker's
        server itself. Call it on the main thread once the server runs (the app's lifespan);
        returns a function that puts the previous handlers back."""
        previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {
            sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)
        }

        def drain(sig: int, frame: FrameType | None) -> None:
            self.begin()
            handler = previous[sig]
            if callable(handler):  # uvicorn's `Server.handle_exit`
                handler(sig, frame)

        for sig in previous:
            signal.signal(sig, drain)

        def restore() -> None:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is drain:
                    signal.signal(sig, handler)

        return restore

    def on_grace_expired(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when the grace runs out (at once if it has): how a stream learns
        it, without a task of its own waiting on `grace_expired` (issue #16). Returns the way
        to call it off."""
        if self.grace_expired.is_set():
            callback()
            return _nothing
        self._on_expiry.add(callback)
        return lambda: self._on_expiry.discard(callback)

    def _arm(self) -> None:
        assert self._loop is not None
        self._loop.call_later(self.grace_seconds, self._expire)

    def _expire(self) -> None:
        self.grace_expired.set()
        for callback in list(self._on_expiry):
            callback()


def _nothing() -> None:
    pass
