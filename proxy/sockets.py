"""The data plane's listening sockets, one per listener address, kept across reloads.

A socket stays open while its address stays in the config, so that no connection is
refused or reset by a reload. A reload binds the sockets of its new addresses first, not
yet serving (`prepare()`), so that a taken port fails the reload before anything was
swapped; `commit()` then starts them, points every socket at the new generation's
routes, and drains the sockets whose address is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .clock import Clock
from .config import Config, Listener, split_address
from .generation import Generation
from .listener import HardenedServer
from .logs import JsonLog
from .metrics import Metrics
from .server import DataPlane, Routing

Bound = tuple[DataPlane, HardenedServer, asyncio.Server]
Retire = Callable[[Coroutine[Any, Any, None]], None]  # run this in the background


class StartError(Exception):
    """Fender cannot start, or a reload cannot be applied (a port is taken, say); the
    message says why."""


class ListenerSockets:
    def __init__(
        self,
        ports: dict[str, int],
        *,
        metrics: Metrics,
        log: JsonLog,
        clock: Clock,
        draining: Callable[[], bool],
    ) -> None:
        self.ports = ports  # listener name -> bound port (shared with Fender's)
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.draining = draining
        self._served: dict[str, Bound] = {}

    async def start(self, config: Config, generation: Generation) -> None:
        """Bind and serve every listener of the first config."""
        bound = await self.prepare(config, generation)
        await self.commit(config, generation, bound, lambda work: work.close())

    async def prepare(self, config: Config, generation: Generation) -> dict[str, Bound]:
        """Bind the addresses `config` adds, not serving yet; raises StartError, having
        closed what it bound, when one cannot be had."""
        bound: dict[str, Bound] = {}
        try:
            for listener in config.listeners:
                key = _key(listener)
                if key not in self._served and key not in bound:
                    routing = generation.routings[listener.name]
                    bound[key] = await self._bind(listener, routing, config.log.access)
        except BaseException:
            self.discard(bound)
            raise
        return bound

    @staticmethod
    def discard(bound: dict[str, Bound]) -> None:
        """Close what prepare() bound for a reload that is not going ahead."""
        for _, _, sock_server in bound.values():
            sock_server.close()

    async def commit(
        self, config: Config, generation: Generation, bound: dict[str, Bound], retire: Retire
    ) -> None:
        """Serve the new sockets, point every socket at `generation`, drain the gone."""
        for listener in config.listeners:
            key = _key(listener)
            if key in bound:
                await bound[key][2].start_serving()
                self._served[key] = bound[key]
            plane, _, sock_server = self._served[key]
            plane.listener, plane.access_log = listener.name, config.log.access
            plane.routing = generation.routings[listener.name]
            self.ports[listener.name] = sock_server.sockets[0].getsockname()[1]
        keys = {_key(listener) for listener in config.listeners}
        for key in [k for k in self._served if k not in keys]:
            _, server, sock_server = self._served.pop(key)
            sock_server.close()
            retire(server.shutdown(config.drain.timeout))
        names = {listener.name for listener in config.listeners} | {"control"}
        for name in [n for n in self.ports if n not in names]:
            del self.ports[name]

    def stop_accepting(self) -> None:
        for _, _, sock_server in self._served.values():
            sock_server.close()  # open connections stay

    async def shutdown(self, grace: float) -> None:
        """Give in-flight requests `grace` seconds to finish, then abort what is left."""
        await asyncio.gather(*(server.shutdown(grace) for _, server, _ in self._served.values()))

    def close(self) -> None:
        self.stop_accepting()
        self._served.clear()

    async def _bind(self, listener: Listener, routing: Routing, access_log: bool) -> Bound:
        plane = DataPlane(
            listener.name,
            routing,
            metrics=self.metrics,
            log=self.log,
            clock=self.clock,
            access_log=access_log,
            draining=self.draining,
        )
        server = HardenedServer(plane.handle, listener.limits, plane.malformed)
        host, port = split_address(listener.address)
        loop = asyncio.get_running_loop()
        try:
            sock_server = await loop.create_server(
                server, host, port, reuse_address=True, backlog=1024, start_serving=False
            )
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise StartError(f"cannot listen on {listener.address}: {why}") from None
        return plane, server, sock_server


def _key(listener: Listener) -> str:
    """A listener keeps its socket across reloads while its address stays; port 0 (the
    kernel picks) is told apart by the listener's name."""
    return listener.address if not listener.address.endswith(":0") else f"{listener.name}@0"
