"""A listening socket, its connections, and how they are drained.

A drain (SIGTERM, POST /drain) happens in two steps, each bounded. First `Listener.draining`
is set: every answer now says `Connection: close`, so keep-alive apps reconnect elsewhere
(after `drain.delay`, see app.py). Then `drain()`: the socket stops accepting, idle
connections close at once, a request already on its way is answered with
`Connection: close`, in-flight requests and tunnels get exactly `grace` (drain.timeout), and what is
left is aborted (the app sees a cut, never a clean end).
"""

from __future__ import annotations

import asyncio

from .server import Listener


class Served:
    def __init__(self, listener: Listener, server: asyncio.Server) -> None:
        self.listener = listener
        self.server = server

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def stop_accepting(self) -> None:
        self.server.close()

    async def drain(self, grace: float) -> None:
        self.stop_accepting()
        listener = self.listener
        listener.draining = True
        for conn in list(listener.connections):
            if conn.serving is None and conn.reading is None and not conn.queue:
                conn.close()  # idle: nothing to wait for
            else:
                conn.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while listener.connections and loop.time() < deadline:
            emptied = listener.emptied = loop.create_future()
            handle = loop.call_at(deadline, _settle, emptied)
            try:
                await emptied
            finally:
                handle.cancel()
                listener.emptied = None
        for conn in list(listener.connections):
            if conn.tunnel is not None:
                conn.tunnel.cut("draining")
            conn.abort()


async def listen(listener: Listener, host: str, port: int, *, start_serving: bool) -> Served:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        listener.protocol, host, port, reuse_address=True, backlog=1024, start_serving=start_serving
    )
    return Served(listener, server)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
