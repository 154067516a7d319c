"""The composition root: builds listeners, upstreams, pipelines and the control port from
one validated Config, runs them, swaps in reloaded configs, and drains them on shutdown.

A reload is all or nothing: the new generation is built, its fresh upstreams started and
its new listener sockets bound before anything is swapped; if any of that fails, what it
made is closed again and the running config stays whole (reload.py says how a failure is
reported).

Drain sequence (SIGTERM, SIGINT or POST /drain; see lifecycle.py): readiness turns 503 at
once; listeners keep serving for `drain.delay` (answers now carry `Connection: close`);
then they stop accepting, idle connections close, and in-flight requests get exactly
`drain.timeout` before they are aborted (http/listener.py).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Coroutine
from typing import Any

from .config.model import Config, load_config, split_address
from .control.api import control_app
from .control.audit import AuditLog
from .control.server import ControlServer
from .control.status import StatusBoard
from .control.token import TokenFile
from .delivery.queues import Queues
from .fleet import Fleet, fleet_for
from .generation import Generation, build, observe
from .http.upstream import AttemptRecorder, Upstream
from .observe.logs import JsonLog
from .observe.metrics import Metrics
from .observe.series import Kept
from .policies import Guards
from .reload import ReloadResult, attempt_reload
from .sockets import ListenerSockets, StartError
from .state.breaker import CircuitBreaker
from .state.clock import Clock, RealClock
from .state.degradation import Degradation
from .state.faults import Faults
from .watch import stamp, watch_file

__all__ = ["Fender", "StartError"]


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
        self.log.set_buffer(config.log.buffer)
        self.log.report_drops(self.metrics.count_log_drops)
        self.rng = random.Random()  # jitter; tests may seed it
        self.faults = Faults(self.clock)
        self.degradation = Degradation(self.clock, self.log)
        self.metrics.degradation_level.set_function(lambda: self.degradation.level)
        self.board = StatusBoard(self.metrics, self.clock, self.degradation, self.faults)
        self.log.tap(self.board.events.offer)  # the last events, for the status page
        self.queues = Queues(self.clock, self.metrics, self.log)  # kept across reloads
        self.board.add_section("queues", self.queues.status)
        self.draining = False
        self.started = False
        self.fleet = fleet_for(config, None, clock=self.clock, log=self.log)
        self._watch_fleet()
        self.generation, _ = self._build(config, None, self.fleet)
        self._swapped_in(self.generation)
        self.stop_requested = asyncio.Event()  # set by POST /drain; serve() waits on it
        audit_file = config.control.audit_log
        self.audit = AuditLog.to_file(audit_file) if audit_file else AuditLog(self.log.raw)
        self.ports: dict[str, int] = {}  # listener name (and "control") -> bound port
        self.sockets = ListenerSockets(
            self.ports, metrics=self.metrics, log=self.log, clock=self.clock
        )
        self._retired: set[asyncio.Task[None]] = set()  # work left by reloads
        self._retired_upstreams: set[Upstream] = set()  # replaced; still finishing exchanges
        self._watcher: asyncio.Future[None] | None = None
        self._reloading = asyncio.Lock()  # one reload at a time, whatever triggered it
        self._control: ControlServer | None = None

    def _attempt_recorder(self, upstream: str) -> AttemptRecorder:
        return functools.partial(self.metrics.count_attempt, upstream)

    def _build(
        self, config: Config, previous: Generation | None, fleet: Fleet | None
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
            fleet=fleet,
            queues=self.queues,
        )

    def _swapped_in(self, generation: Generation) -> None:
        """What points at a generation from outside, set when it becomes the running one."""
        observe(generation, self.metrics)
        self.faults.declared(generation.config.faults)
        if generation.fleet is not None:  # cool-downs the fleet hears hold these quotas
            quotas = {name: g.quota for name, g in generation.guards.items() if g.quota}
            generation.fleet.adopt({name: quota.hold for name, quota in quotas.items()})
        self.queues.update(generation.config, generation.deliveries)

    def _watch_fleet(self) -> None:
        """fender_redis_up and fender_fleet_replicas, read when scraped (reloads change
        the fleet)."""
        self.metrics.redis_up.set_function(self._redis_up)
        self.metrics.fleet_replicas.set_function(self._replicas)

    def _redis_up(self) -> float:
        return float(self.fleet is not None and self.fleet.link.up)

    def _replicas(self) -> float:
        return float(self.fleet.replicas) if self.fleet is not None else 0.0

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

    async def _start_upstreams(self, upstreams: list[Upstream]) -> None:
        for upstream in upstreams:
            await upstream.start()

    def _announce(self, upstreams: list[Upstream]) -> None:
        """Warn of upstreams that went live without TLS verification."""
        for upstream in upstreams:
            if not upstream.config.tls.verify:
                self.log.event("tls_verification_off", "warning", upstream=upstream.name)

    async def start(self) -> None:
        """Start serving; on any failure, close what was started and raise."""
        try:
            if self.fleet is not None:  # bounded: Fender starts whatever Redis does
                await self.fleet.start()
            await self._start_upstreams(list(self.upstreams.values()))
            await self.queues.start()  # a store that cannot open answers 503 until it can
            await self.sockets.start(self.config, self.generation)
            await self._start_control()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, OSError):
                raise StartError(f"cannot listen: {exc.strerror or exc}") from None
            raise
        self.started = True
        self._announce(list(self.upstreams.values()))
        self.log.event(
            "started", config=self.config.source, config_hash=self.config.hash, ports=self.ports
        )
        self._warn(self.config)
        self._retire(self.board.watch(lambda: self.generation))
        reload, seen = self.config.reload, stamp(self.config.source)
        if reload.watch and seen is not None:  # a file, not <memory>
            watcher = watch_file(
                self.config.source,
                reload.interval,
                self.clock,
                self._on_change,
                self._on_error,
                seen,
            )
            self._watcher = asyncio.ensure_future(watcher)

    async def _on_change(self) -> None:
        self.log.event("config_changed", config=self.config.source)
        await self.reload_from_file()

    def _on_error(self, exc: BaseException) -> None:
        self.log.event("watch_failed", "error", error=type(exc).__name__)

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
        self._control = ControlServer(app, control.limits)
        host, port = split_address(control.address)
        self.ports["control"] = await self._control.start(host, port)

    async def reload_from_file(self) -> ReloadResult:
        """Load the policy file again and swap it in whole; whatever fails changes nothing.
        Never raises: the result says what happened (and it was logged and counted)."""
        async with self._reloading:
            return await attempt_reload(self, lambda: load_config(self.config.source))

    async def reload(self, config: Config) -> None:
        """Swap in a new config: new requests use it, requests in flight finish on theirs.
        Raises, with the running config left whole, when it cannot be applied."""
        old = self.generation
        fresh: list[Upstream] = []
        fleet = fleet_for(config, self.fleet, clock=self.clock, log=self.log)
        try:
            generation, fresh = self._build(config, old, fleet)
            await self._start_upstreams(fresh)
            bound = await self.sockets.prepare(config, generation)
            if fleet is not None and fleet is not self.fleet:
                await fleet.start()  # bounded; a Redis that is down fails nothing
        except BaseException:
            for upstream in fresh:  # started or not: close() is safe either way
                await upstream.close()
            if fleet is not None and fleet is not self.fleet:
                await fleet.close(link_too=self.fleet is None or fleet.link is not self.fleet.link)
            raise
        # Committed from here on: nothing below waits for anything that can fail.
        self.generation, self.config = generation, config
        old_fleet, self.fleet = self.fleet, fleet
        self._swapped_in(generation)
        if old_fleet is not None and old_fleet is not fleet:  # its heartbeat leaves, in time
            self._retire(old_fleet.close(fleet is None or fleet.link is not old_fleet.link))
        if config.log.level != old.config.log.level:
            self.log.set_level(config.log.level)
        self.log.set_buffer(config.log.buffer)
        await self.sockets.commit(config, generation, bound, self._retire)
        self._announce(fresh)
        kept = set(map(id, generation.upstreams.values()))
        for upstream in old.upstreams.values():
            if id(upstream) not in kept:  # idle connections close now, busy ones when done
                await upstream.close()
                self._retired_upstreams = {u for u in self._retired_upstreams if u.in_use}
                self._retired_upstreams.add(upstream)
        if split_address(config.control.address) != split_address(old.config.control.address):
            self.log.event("control_address_unchanged", "warning", reason="needs a restart")
        self.metrics.retain(Kept.of(config))
        self.metrics.set_config(config.hash)
        self.metrics.count_reload("success")
        self.log.event("reloaded", config=config.source, config_hash=config.hash)
        self._warn(config)

    def _warn(self, config: Config) -> None:
        for warning in config.warnings:
            self.log.event("config_warning", "warning", warning=warning.render(config.source))

    def _retire(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def drain(self, skip_delay: asyncio.Event | None = None) -> None:
        """Graceful stop: see the module docstring for the sequence."""
        self.draining = True
        self.sockets.draining()
        drain = self.config.drain
        self.log.event("draining", delay_s=drain.delay, timeout_s=drain.timeout)
        if drain.delay > 0:
            waiter = asyncio.ensure_future((skip_delay or asyncio.Event()).wait())
            sleeper = asyncio.ensure_future(self.clock.sleep(drain.delay))
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            sleeper.cancel()
        # Queued deliveries in flight get the same time, then go back to their queues.
        await asyncio.gather(self.sockets.shutdown(drain.timeout), self.queues.drain(drain.timeout))
        await self.close()
        self.log.event("stopped")

    async def close(self) -> None:
        """Stop everything now (after drain, or when start failed)."""
        self.sockets.close()
        for task in self._retired:
            task.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        await self.queues.close()
        for upstream in [*self.upstreams.values(), *self._retired_upstreams]:
            await upstream.close(busy_too=True)
        if self._control is not None:
            await self._control.close()
            self._control = None
        if self.fleet is not None:
            await self.fleet.close()
        self.log.flush()
