"""`fender demo`: Fender in front of a built-in upstream that misbehaves on a schedule.

Nothing else needs to be installed or running. A steady trickle of requests goes through
Fender, and once a second the demo prints what the app saw: sent, ok, retried (rescued by
a retry), fallback (answered by the fallback chain), failed, by status, and the state of
the upstream's circuit breaker. The upstream goes through an outage: the breaker opens,
the fallback answers, the breaker probes and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import TextIO

import aiohttp
from aiohttp import web

from .app import Fender
from .config.model import load_config
from .observe.logs import JsonLog
from .state.breaker import CircuitBreaker

RATE = 20  # requests per second
PHASE_SECONDS = 6.0


@dataclass(frozen=True)
class Phase:
    name: str
    error_share: float = 0.0  # answered 503
    slow_share: float = 0.0  # answered after 1.5s
    throttle_share: float = 0.0  # answered 429 with Retry-After: 1


SCHEDULE = (
    Phase("healthy"),
    Phase("errors", error_share=0.4),
    Phase("slow", slow_share=0.3),
    Phase("throttled", throttle_share=0.5),
    Phase("outage", error_share=1.0),
)


GOLDEN = 0.6180339887498949


class FlakyUpstream:
    """The demo's upstream: healthy, then errors, slow answers, 429s and an outage.

    Which requests misbehave follows an evenly spread sequence (the fractional parts of
    n x golden ratio), so each phase shows its share and not the streaks of a random one.
    """

    def __init__(self, phase_seconds: float) -> None:
        self.count = 0
        self.phase_seconds = phase_seconds
        self.started = 0.0
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", self.handle)

    def phase(self) -> Phase:
        elapsed = asyncio.get_running_loop().time() - self.started
        return SCHEDULE[int(elapsed // self.phase_seconds) % len(SCHEDULE)]

    async def handle(self, request: web.Request) -> web.Response:
        self.count += 1
        phase, roll = self.phase(), (self.count * GOLDEN) % 1.0
        if roll < phase.error_share:
            return web.json_response({"error": "overloaded"}, status=503)
        if roll < phase.throttle_share:
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": "1"}
            )
        if roll < phase.slow_share:
            await asyncio.sleep(1.5)
        return web.json_response({"item": request.path, "phase": phase.name})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run_demo(
    duration: float, out: TextIO | None = None, phase_seconds: float = PHASE_SECONDS
) -> int:
    stream = out if out is not None else sys.stdout
    upstream = FlakyUpstream(phase_seconds)
    runner = web.AppRunner(upstream.app, access_log=None)
    await runner.setup()
    up_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()
    env = {
        "DEMO_UPSTREAM": f"http://127.0.0.1:{up_port}",
        "DEMO_PORT": str(free_port()),
        "DEMO_CONTROL_PORT": str(free_port()),
    }
    with resources.as_file(resources.files("proxy") / "demo.yaml") as path:
        config = load_config(path, env=env)
    fender = Fender(config, log=JsonLog(sys.stderr.buffer))
    await fender.start()
    base = f"http://127.0.0.1:{fender.ports['egress']}/catalog"
    print(
        f"fender demo: app -> {base} -> built-in upstream (healthy, errors, slow, throttled, "
        f"outage, {phase_seconds:g}s each); the status page on "
        f"http://127.0.0.1:{fender.ports['control']}/ (metrics on /metrics)",
        file=stream,
        flush=True,
    )
    loop = asyncio.get_running_loop()
    upstream.started = loop.time()
    totals: Counter[str] = Counter()
    try:
        async with aiohttp.ClientSession() as client:
            breaker = fender.guards["flaky"].breaker
            await _traffic(client, base, duration, upstream, totals, stream, breaker)
    except asyncio.CancelledError:
        pass
    finally:
        await fender.drain()
        await runner.cleanup()
    print(f"total: {_summary(totals)}", file=stream, flush=True)
    return 0


async def _traffic(
    client: aiohttp.ClientSession,
    base: str,
    duration: float,
    upstream: FlakyUpstream,
    totals: Counter[str],
    stream: TextIO,
    breaker: CircuitBreaker | None,
) -> None:
    loop = asyncio.get_running_loop()
    second: Counter[str] = Counter()
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        outcome = "failed"
        try:
            async with client.get(f"{base}/items/{i % 40}") as resp:
                await resp.read()
                outcome = resp.headers.get("x-fender-outcome", "ok")
                if resp.status >= 400 and outcome != "fallback":
                    outcome = "failed"
                key = str(resp.status)
        except aiohttp.ClientError:
            key = "error"
        for counter in (second, totals):
            counter["sent"] += 1
            counter[outcome] += 1
            counter[key] += 1

    start, i = loop.time(), 0
    next_report = start + 1
    while (now := loop.time()) < start + duration:
        task = loop.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        if now >= next_report:
            phase = upstream.phase().name
            circuit = breaker.state if breaker is not None else "-"
            print(
                f"{now - start:4.0f}s  {phase:<9}  {_summary(second)}  circuit={circuit}",
                file=stream,
                flush=True,
            )
            second.clear()
            next_report += 1
        await asyncio.sleep(1 / RATE)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


def _summary(counts: Counter[str]) -> str:
    statuses = " ".join(
        f"{k}x{v}" for k, v in sorted(counts.items()) if k[0].isdigit() or k == "error"
    )
    return (
        f"sent={counts['sent']:<3} ok={counts['ok']:<3} retried={counts['retried']:<3} "
        f"fallback={counts['fallback']:<3} failed={counts['failed']:<3} {statuses}"
    )
