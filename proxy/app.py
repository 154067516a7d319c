"""The composition root: builds listeners, upstreams, pipelines and the control port from
one validated Config, runs them, swaps in reloaded configs, and drains them on shutdown.

Drain sequence (SIGTERM, SIGINT or POST /drain; see lifecycle.py): readiness turns 503 at
once; listeners keep serving for `drain.delay` (answers now carry `Connection: close`);
then they stop accepting, and in-flight requests get `drain.timeout` to finish before
they are aborted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from .audit import AuditLog
from .breaker import CircuitBreaker
from .clock import Clock, RealClock
from .config import Config, ConfigError, Listener, load_config, split_address
from .control import control_app
from .degradation import Degradation
from .faults import Faults
from .generation import Generation, build
from .listener import HardenedServer
from .logs import JsonLog
from .metrics import Metrics
from .policies import Guards
from .series import Kept
from .server import DataPlane
from .status import StatusBoard
from .token import TokenFile
from .upstream import AttemptRecorder, Upstream
from .watch import stamp, watch_file


class Fender:
    """One running proxy for one Config."""

    def __init__(
        self,
        config: Config,
        *,
        log: JsonLog | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.log = log or JsonLog()
        self.clock = clock or RealClock()
        self.metrics = metrics or Metrics()
        self.metrics.set_config(config.hash)
        self.log.set_level(config.log.level)
        self.rng = random.Random()  # jitter; tests may seed it
        self.faults = Faults(self.clock)
        self.degradation = Degradation(self.clock, self.log)
        self.metrics.degradation_level.set_function(lambda: self.degradation.level)
        self.board = StatusBoard(self.metrics, self.clock, self.degradation, self.faults)
        self.draining = False
        self.started = False
        self.generation, _ = self._build(config, None)
        self.stop_requested = asyncio.Event()  # set by POST /drain; serve() waits on it
        audit_file = config.control.audit_log
        self.audit = AuditLog.to_file(audit_file) if audit_file else AuditLog(self.log.raw)
        # by listener address: its data plane, its aiohttp server, its socket server
        self._servers: dict[str, tuple[DataPlane, HardenedServer, asyncio.Server]] = {}
        self._retired: set[asyncio.Task[None]] = set()  # work left by reloads
        self._retired_upstreams: set[Upstream] = set()  # replaced, closing after a grace
        self._watcher: asyncio.Future[None] | None = None
        self._reloading = asyncio.Lock()  # one reload at a time, whatever triggered it
        self._control: web.AppRunner | None = None
        self.ports: dict[str, int] = {}  # listener name (and "control") -> bound port

    def _attempt_recorder(self, upstream: str) -> AttemptRecorder:
        count = self.metrics.count_attempt
        return lambda endpoint, result: count(upstream, endpoint, result)

    def _build(
        self, config: Config, previous: Generation | None
    ) -> tuple[Generation, list[Upstream]]:
        return build(
            config,
            previous,
            clock=self.clock,
            metrics=self.metrics,
            log=self.log,
            rng=self.rng,
            recorder=self._attempt_recorder,
            faults=self.faults,
            level=self.degradation.current,
        )

    @property
    def upstreams(self) -> dict[str, Upstream]:
        return self.generation.upstreams

    @property
    def guards(self) -> dict[str, Guards]:
        return self.generation.guards

    def ready(self) -> bool:
        return self.started and not self.draining

    def breaker(self, upstream: str) -> CircuitBreaker | None:
        guards = self.guards.get(upstream)
        return guards.breaker if guards is not None else None

    def request_drain(self) -> None:
        self.stop_requested.set()

    def status(self) -> dict[str, Any]:
        """What GET /status shows."""
        view = self.board.status(self.generation)
        return {"ready": self.ready(), "draining": self.draining, **view}

    def set_degradation(self, level: str | None, ttl: float) -> None:
        self.degradation.set_by_hand(level, ttl, self.board.downs(self.generation))

    def _data_plane(self, listener: Listener) -> DataPlane:
        return DataPlane(
            listener.name,
            self.generation.routings[listener.name],
            metrics=self.metrics,
            log=self.log,
            clock=self.clock,
            access_log=self.config.log.access,
            draining=lambda: self.draining,
        )

    async def _start_upstreams(self, upstreams: list[Upstream]) -> None:
        for upstream in upstreams:
            await upstream.start()
            if not upstream.config.tls.verify:
                self.log.event("tls_verification_off", "warning", upstream=upstream.name)

    async def _listen(self, listener: Listener) -> None:
        plane = self._data_plane(listener)
        server = HardenedServer(plane.handle, listener.limits, plane.malformed)
        host, port = split_address(listener.address)
        loop = asyncio.get_running_loop()
        sock_server = await loop.create_server(server, host, port, reuse_address=True, backlog=1024)
        self._servers[_key(listener)] = (plane, server, sock_server)
        self.ports[listener.name] = sock_server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        await self._start_upstreams(list(self.upstreams.values()))
        try:
            for listener in self.config.listeners:
                await self._listen(listener)
            await self._start_control()
        except OSError as exc:
            await self.close()
            raise StartError(f"cannot listen: {exc.strerror or exc}") from None
        self.started = True
        self.log.event(
            "started", config=self.config.source, config_hash=self.config.hash, ports=self.ports
        )
        self._retire(self.board.watch(lambda: self.generation))
        reload = self.config.reload
        if reload.watch and stamp(self.config.source) is not None:  # a file, not <memory>
            watcher = watch_file(self.config.source, reload.interval, self.clock, self._on_change)
            self._watcher = asyncio.ensure_future(watcher)

    async def _on_change(self) -> None:
        self.log.event("config_changed", config=self.config.source)
        await self.reload_from_file()

    async def _start_control(self) -> None:
        control = self.config.control
        token = TokenFile(control.token_file) if control.token_file is not None else None
        app = control_app(
            metrics=self.metrics,
            ready=self.ready,
            config_view=lambda: self.config.public_view(),
            token=token,
            fender=self,
            audit=self.audit,
            log=self.log,
        )
        self._control = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._control.setup()
        host, port = split_address(control.address)
        site = web.TCPSite(self._control, host, port, reuse_address=True)
        await site.start()
        self.ports["control"] = self._control.addresses[0][1]

    async def reload_from_file(self) -> tuple[bool, str]:
        """Load the policy file again and swap it in; a bad file changes nothing.
        Returns (success, the new hash or the problems)."""
        async with self._reloading:
            return await self._reload_from_file()

    async def _reload_from_file(self) -> tuple[bool, str]:
        try:
            config = load_config(self.config.source)
        except ConfigError as exc:
            self.metrics.count_reload("failure")
            self.log.event("reload_failed", "error", config=self.config.source, problems=str(exc))
            return False, str(exc)
        # Whole configs compared, not hashes: the hash leaves secret values out, and a
        # rotated API key must still be swapped in.
        if config == self.config:
            return True, config.hash
        await self.reload(config)
        return True, config.hash

    async def reload(self, config: Config) -> None:
        """Swap in a new config: new requests use it, requests in flight finish on theirs."""
        old = self.generation
        generation, fresh = self._build(config, old)
        await self._start_upstreams(fresh)
        self.generation, self.config = generation, config
        if config.log.level != old.config.log.level:
            self.log.set_level(config.log.level)
        for listener in config.listeners:
            served = self._servers.get(_key(listener))
            if served is None:
                await self._listen(listener)
                continue
            plane, server, sock_server = served
            plane.listener, plane.access_log = listener.name, config.log.access
            plane.routing = generation.routings[listener.name]
            self.ports[listener.name] = sock_server.sockets[0].getsockname()[1]
        keys = {_key(listener) for listener in config.listeners}
        for key in [k for k in self._servers if k not in keys]:
            _, server, sock_server = self._servers.pop(key)
            sock_server.close()
            self._retire(server.shutdown(config.drain.timeout))
        kept = set(map(id, generation.upstreams.values()))
        for upstream in old.upstreams.values():
            if id(upstream) not in kept:  # its requests in flight get the drain timeout
                self._retired_upstreams.add(upstream)
                self._retire(self._close_later(upstream, config.drain.timeout))
        if split_address(config.control.address) != split_address(old.config.control.address):
            self.log.event("control_address_unchanged", "warning", reason="needs a restart")
        self.metrics.retain(Kept.of(config))
        self.metrics.set_config(config.hash)
        self.metrics.count_reload("success")
        self.log.event("reloaded", config=config.source, config_hash=config.hash)

    def _retire(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _close_later(self, upstream: Upstream, after: float) -> None:
        await self.clock.sleep(after)
        self._retired_upstreams.discard(upstream)
        await upstream.close()

    async def drain(self, skip_delay: asyncio.Event | None = None) -> None:
        """Graceful stop: see the module docstring for the sequence."""
        self.draining = True
        drain = self.config.drain
        self.log.event("draining", delay_s=drain.delay, timeout_s=drain.timeout)
        if drain.delay > 0:
            waiter = asyncio.ensure_future((skip_delay or asyncio.Event()).wait())
            sleeper = asyncio.ensure_future(self.clock.sleep(drain.delay))
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            sleeper.cancel()
        served = list(self._servers.values())
        for _, _, sock_server in served:
            sock_server.close()  # stop accepting; open connections stay
        await asyncio.gather(*(server.shutdown(drain.timeout) for _, server, _ in served))
        await self.close()
        self.log.event("stopped")

    async def close(self) -> None:
        """Stop everything now (after drain, or when start failed)."""
        for _, _, sock_server in self._servers.values():
            sock_server.close()
        self._servers.clear()
        for task in self._retired:
            task.cancel()
        for upstream in self._retired_upstreams:
            await upstream.close()
        self._retired_upstreams.clear()
        if self._watcher is not None:
            self._watcher.cancel()
        for upstream in self.upstreams.values():
            await upstream.close()
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        self.log.flush()


def _key(listener: Listener) -> str:
    """A listener keeps its socket across reloads while its address stays; port 0 (the
    kernel picks) is told apart by the listener's name."""
    return listener.address if not listener.address.endswith(":0") else f"{listener.name}@0"


class StartError(Exception):
    """Fender cannot start (a port is taken, say); the message says why."""
