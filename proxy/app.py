"""The composition root: builds listeners, upstreams, pipelines and the control port from
one validated Config, runs them, and drains them on shutdown.

Drain sequence (SIGTERM or SIGINT): readiness turns 503 at once; listeners keep serving
for `drain.delay` (answers now carry `Connection: close`); then they stop accepting, and
in-flight requests get `drain.timeout` to finish before they are aborted.
"""

from __future__ import annotations

import asyncio
import random
import signal
from typing import Any

from aiohttp import web

from .audit import AuditLog
from .breaker import CircuitBreaker
from .clock import Clock, RealClock
from .config import Config, split_address
from .control import control_app
from .listener import HardenedServer
from .logs import JsonLog
from .metrics import Metrics
from .policies import build_guards, build_pipeline
from .routing import CompiledRoute, Router
from .server import DataPlane, RouteTarget
from .upstream import AttemptRecorder, Upstream


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
        self.rng = random.Random()  # jitter; tests may seed it
        self.draining = False
        self.started = False
        self.upstreams = {
            name: Upstream(name, cfg, self._attempt_recorder(name), self.clock)
            for name, cfg in config.upstreams.items()
        }
        self.guards = {
            name: build_guards(u, clock=self.clock, metrics=self.metrics, log=self.log)
            for name, u in self.upstreams.items()
        }
        self.stop_requested = asyncio.Event()  # set by POST /drain; serve() waits on it
        audit_file = config.control.audit_log
        self.audit = AuditLog.to_file(audit_file) if audit_file else AuditLog(self.log.raw)
        self._servers: list[tuple[str, HardenedServer, asyncio.Server]] = []
        self._control: web.AppRunner | None = None
        self.ports: dict[str, int] = {}  # listener name (and "control") -> bound port

    def _attempt_recorder(self, upstream: str) -> AttemptRecorder:
        count = self.metrics.count_attempt
        return lambda endpoint, result: count(upstream, endpoint, result)

    def ready(self) -> bool:
        return self.started and not self.draining

    def breaker(self, upstream: str) -> CircuitBreaker | None:
        guards = self.guards.get(upstream)
        return guards.breaker if guards is not None else None

    def request_drain(self) -> None:
        self.stop_requested.set()

    def status(self) -> dict[str, Any]:
        """What GET /status shows: the state of every upstream's guards and route."""
        upstreams: dict[str, Any] = {}
        for name, upstream in self.upstreams.items():
            guards = self.guards[name]
            entry: dict[str, Any] = {"endpoints": [e.label for e in upstream.endpoints]}
            entry["breaker"] = guards.breaker.status() if guards.breaker else None
            entry["bulkhead"] = (
                {
                    "in_flight": guards.bulkhead.in_flight,
                    "queued": guards.bulkhead.queued,
                    "max_concurrent": guards.bulkhead.max_concurrent,
                }
                if guards.bulkhead
                else None
            )
            entry["quota"] = (
                {
                    "paused_for_s": round(guards.quota.pause_left(), 3),
                    "tokens": guards.quota.bucket.remaining() if guards.quota.bucket else None,
                }
                if guards.quota
                else None
            )
            upstreams[name] = entry
        return {
            "ready": self.ready(),
            "draining": self.draining,
            "config_hash": self.config.hash,
            "upstreams": upstreams,
            "routes": self.metrics.outcomes_by_route(),
        }

    def _data_plane(self, index: int) -> DataPlane:
        listener = self.config.listeners[index]
        routes = [CompiledRoute.compile(r) for r in listener.routes]
        targets = {
            r.name: RouteTarget(
                upstream=r.upstream,
                headers=self.upstreams[r.upstream].request_headers,
                handler=build_pipeline(
                    r.name,
                    self.config.policy_of(r),
                    r.upstream,
                    guards=self.guards,
                    headers={n: u.request_headers for n, u in self.upstreams.items()},
                    clock=self.clock,
                    metrics=self.metrics,
                    rng=self.rng,
                ),
            )
            for r in listener.routes
        }
        return DataPlane(
            listener.name,
            Router(routes),
            targets,
            metrics=self.metrics,
            log=self.log,
            clock=self.clock,
            access_log=self.config.log.access,
            draining=lambda: self.draining,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, upstream in self.upstreams.items():
            await upstream.start()
            if not upstream.config.tls.verify:
                self.log.event("tls_verification_off", "warning", upstream=name)
        try:
            for i, listener in enumerate(self.config.listeners):
                plane = self._data_plane(i)
                server = HardenedServer(plane.handle, listener.limits, plane.malformed)
                host, port = split_address(listener.address)
                sock_server = await loop.create_server(
                    server, host, port, reuse_address=True, backlog=1024
                )
                self._servers.append((listener.name, server, sock_server))
                self.ports[listener.name] = sock_server.sockets[0].getsockname()[1]
            await self._start_control()
        except OSError as exc:
            await self.close()
            raise StartError(f"cannot listen: {exc.strerror or exc}") from None
        self.started = True
        self.log.event(
            "started", config=self.config.source, config_hash=self.config.hash, ports=self.ports
        )

    async def _start_control(self) -> None:
        control = self.config.control
        token = None
        if control.token_file is not None:
            token = control.token_file.read_text(encoding="utf-8").strip()
        app = control_app(
            metrics=self.metrics,
            ready=self.ready,
            config_view=self.config.public_view,
            token=token,
            fender=self,
            audit=self.audit,
        )
        self._control = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._control.setup()
        host, port = split_address(control.address)
        site = web.TCPSite(self._control, host, port, reuse_address=True)
        await site.start()
        self.ports["control"] = self._control.addresses[0][1]

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
        for _, _, sock_server in self._servers:
            sock_server.close()  # stop accepting; open connections stay
        await asyncio.gather(*(server.shutdown(drain.timeout) for _, server, _ in self._servers))
        await self.close()
        self.log.event("stopped")

    async def close(self) -> None:
        """Stop everything now (after drain, or when start failed)."""
        for _, _, sock_server in self._servers:
            sock_server.close()
        self._servers.clear()
        for upstream in self.upstreams.values():
            await upstream.close()
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        self.log.flush()


class StartError(Exception):
    """Fender cannot start (a port is taken, say); the message says why."""


async def serve(config: Config, log: JsonLog) -> int:
    """Run until SIGTERM or SIGINT, then drain; returns the exit code."""
    fender = Fender(config, log=log)
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second signal skips the rest of the drain delay
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            hurry.set()
        stop.set()
        log.event("signal", signal=signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await fender.start()
    except StartError as exc:
        log.event("start_failed", "error", error=str(exc))
        return 1
    stopping = asyncio.ensure_future(stop.wait())
    asked = asyncio.ensure_future(fender.stop_requested.wait())
    await asyncio.wait({stopping, asked}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    asked.cancel()
    stop.set()  # a signal during the drain now skips the rest of its delay
    await fender.drain(hurry)
    return 0
