"""The process around a Fender: signals in, drain, exit code out.

SIGTERM and SIGINT drain (a second one skips the rest of the drain delay); SIGHUP reloads
the policy file; `POST /drain` drains like SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal

from .app import Fender
from .config.model import Config
from .observe.logs import JsonLog
from .reload import describe


async def _reload(fender: Fender) -> None:
    await fender.reload_from_file()


async def serve(config: Config, log: JsonLog) -> int:
    """Run until SIGTERM or SIGINT, then drain; returns the exit code. A failure to start,
    whatever it is, is a `start_failed` line and exit status 1, never a traceback."""
    try:
        return await _serve(config, log)
    finally:
        log.flush()  # the last lines (`stopped`, `start_failed`) before the process ends


async def _serve(config: Config, log: JsonLog) -> int:
    try:
        fender = Fender(config, log=log)
    except Exception as exc:
        log.event("start_failed", "error", error=describe(exc))
        return 1
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

    def on_hangup() -> None:
        log.event("signal", signal="SIGHUP")
        fender._retire(_reload(fender))

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await fender.start()
    except Exception as exc:
        log.event("start_failed", "error", error=describe(exc))
        return 1
    stopping = asyncio.ensure_future(stop.wait())
    asked = asyncio.ensure_future(fender.stop_requested.wait())
    await asyncio.wait({stopping, asked}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    asked.cancel()
    stop.set()  # a signal during the drain now skips the rest of its delay
    await fender.drain(hurry)
    return 0
