"""A TCP forwarder on a loopback port that can cut every connection through it at once: a
client's network dropping mid-answer (a phone changing networks), for clients such as a
browser whose sockets a test cannot close itself.

`CuttingProxy.start(target_port)` forwards each connection to `127.0.0.1:target_port` from a
thread with its own event loop; `cut()` closes all of them, both ways, and new connections are
forwarded as before; `stop()` closes everything.
"""

from __future__ import annotations

import asyncio
import threading

from testkit.ports import free_port


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.connections = 0  # accepted so far
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="cutting-proxy")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, target_port: int) -> CuttingProxy:
        proxy = cls(target_port)
        proxy._thread.start()
        proxy._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(proxy._forward, "127.0.0.1", proxy.port), proxy._loop
        ).result(5)
        return proxy

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            target_reader, target_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.close()
            return
        pair = {writer, target_writer}
        self._writers |= pair
        try:
            await asyncio.gather(
                _pipe(reader, target_writer), _pipe(target_reader, writer), return_exceptions=True
            )
        finally:
            for each in pair:
                each.close()
            self._writers -= pair

    def cut(self) -> None:
        """Close every open connection, as a dropped network would."""

        def close_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(close_all)

    def stop(self) -> None:
        async def shut() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
    sink.close()
