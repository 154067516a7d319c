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

from .config.model import Config, Listener, split_address
from .generation import Generation
from .http.listener import Served, listen
from .http.server import Listener as ListenerState
from .observe.logs import JsonLog
from .observe.metrics import Metrics
from .state.clock import Clock

Retire = Callable[[Coroutine[Any, Any, None]], None]  # run this in the background


class StartError(Exception):
    """Fender cannot start, or a reload cannot be applied (a port is taken, say); the
    message says why."""


class ListenerSockets:
    def __init__(
        self, ports: dict[str, int], *, metrics: Metrics, log: JsonLog, clock: Clock
    ) -> None:
        self.ports = ports  # listener name -> bound port (shared with Fender's)
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self._served: dict[str, Served] = {}

    async def start(self, config: Config, generation: Generation) -> None:
        """Bind and serve every listener of the first config."""
        bound = await self.prepare(config, generation)
        await self.commit(config, generation, bound, lambda work: work.close())

    async def prepare(self, config: Config, generation: Generation) -> dict[str, Served]:
        """Bind the addresses `config` adds, not serving yet; raises StartError, having
        closed what it bound, when one cannot be had."""
        bound: dict[str, Served] = {}
        try:
            for listener in config.listeners:
                key = _key(listener)
                if key not in self._served and key not in bound:
                    bound[key] = await self._bind(listener, config, generation)
        except BaseException:
            self.discard(bound)
            raise
        return bound

    @staticmethod
    def discard(bound: dict[str, Served]) -> None:
        """Close what prepare() bound for a reload that is not going ahead."""
        for served in bound.values():
            served.stop_accepting()

    async def commit(
        self, config: Config, generation: Generation, bound: dict[str, Served], retire: Retire
    ) -> None:
        """Serve the new sockets, point every socket at `generation`, drain the gone."""
        for listener in config.listeners:
            key = _key(listener)
            if key in bound:
                await bound[key].server.start_serving()
                self._served[key] = bound[key]
            served = self._served[key]
            state = served.listener
            state.name, state.access_log = listener.name, config.log.access
            state.routing, state.limits = generation.routings[listener.name], listener.limits
            self.ports[listener.name] = served.port
        keys = {_key(listener) for listener in config.listeners}
        for key in [k for k in self._served if k not in keys]:
            retire(self._served.pop(key).drain(config.drain.timeout))
        names = {listener.name for listener in config.listeners} | {"control"}
        for name in [n for n in self.ports if n not in names]:
            del self.ports[name]

    def draining(self) -> None:
        """From now on every answer says `Connection: close`."""
        for served in self._served.values():
            served.listener.draining = True

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; idle connections close, in-flight requests get `grace` seconds,
        then what is left is aborted."""
        await asyncio.gather(*(served.drain(grace) for served in self._served.values()))

    def close(self) -> None:
        for served in self._served.values():
            served.stop_accepting()
            for conn in list(served.listener.connections):
                conn.abort()
        self._served.clear()

    async def _bind(self, listener: Listener, config: Config, generation: Generation) -> Served:
        state = ListenerState(
            listener.name,
            generation.routings[listener.name],
            listener.limits,
            metrics=self.metrics,
            log=self.log,
            clock=self.clock,
            access_log=config.log.access,
        )
        host, port = split_address(listener.address)
        try:
            return await listen(state, host, port, start_serving=False)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise StartError(f"cannot listen on {listener.address}: {why}") from None


def _key(listener: Listener) -> str:
    """A listener keeps its socket across reloads while its address stays; port 0 (the
    kernel picks) is told apart by the listener's name."""
    return listener.address if not listener.address.endswith(":0") else f"{listener.name}@0"
