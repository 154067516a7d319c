"""Policy files with a delivery route, and the app's side of one: post, then wait for the
queue to settle."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.proxy import RunningProxy, config, wait_for


def delivery_config(
    upstream_url: str,
    store: str,
    *,
    queue: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """One route `send` (any path) that delivers through queue `outbox` to upstream `up`."""
    route: dict[str, Any] = {"name": "send", "upstream": "up", "delivery": {"queue": "outbox"}}
    if policy is not None:
        route["policy"] = "p"
        top["policies"] = {"p": policy}
    section = {"store": store, "schedule": ["50ms"], "max_attempts": 50, **(queue or {})}
    return config(
        {"up": {"endpoints": [upstream_url], **(upstream or {})}},
        routes=[route],
        queues={"outbox": section},
        **top,
    )


async def post(
    client: aiohttp.ClientSession, url: str, body: bytes = b"{}", **headers: str
) -> tuple[int, dict[str, Any], Any]:
    """(status, JSON body, headers) of the app's POST."""
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    async with client.post(url + "/v1/send", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def stats(proxy: RunningProxy, queue: str = "outbox") -> dict[str, Any]:
    view: dict[str, Any] = proxy.fender.queues.status()[queue]
    return view


async def settled(proxy: RunningProxy, seconds: float = 20.0) -> dict[str, Any]:
    """Wait until nothing waits in the queue or is in flight; its numbers then."""

    async def empty() -> bool:
        view = stats(proxy)
        return bool(view["depth"] == 0 and view["in_flight"] == 0)

    await wait_for(empty, seconds)
    return stats(proxy)


async def control(
    client: aiohttp.ClientSession, proxy_or_url: RunningProxy | str, method: str, path: str
) -> tuple[int, Any]:
    base = proxy_or_url if isinstance(proxy_or_url, str) else proxy_or_url.control_url
    async with client.request(method, base + path) as resp:
        return resp.status, await resp.json(content_type=None)


class Process:
    """`fender run` on a policy file; stopped by its PID."""

    def __init__(self, path: Path, port: int, control: int, file_limit: int | None = None) -> None:
        self.path, self.port, self.control = path, port, control
        self.file_limit = file_limit
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, client: aiohttp.ClientSession) -> None:
        from tests.integration.test_lifecycle import wait_ready

        limit = self.file_limit

        def limit_files() -> None:  # a disk that takes no more than `limit` bytes a file
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "-c", str(self.path),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=limit_files if limit is not None else None,
        )  # fmt: skip
        await wait_ready(client, self.control)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no drain, no goodbye
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def fender_process(
    path: Path, ports: Callable[[], int], upstream_port: int, store: str, **queue: Any
) -> Process:
    """A policy file at `path` with one route `send` that delivers through queue `outbox`
    (in `store`) to the upstream on `upstream_port`, and the Process that runs it."""
    port, control = ports(), ports()
    data = {
        "version": 1,
        "control": {"address": f"127.0.0.1:{control}"},
        "drain": {"delay": "0s", "timeout": "2s"},
        "log": {"access": False},
        "listeners": [
            {
                "name": "egress",
                "address": f"127.0.0.1:{port}",
                "routes": [{"name": "send", "upstream": "up", "delivery": {"queue": "outbox"}}],
            }
        ],
        "upstreams": {"up": {"endpoints": [f"http://127.0.0.1:{upstream_port}"]}},
        "queues": {"outbox": {"store": store, "schedule": ["50ms"], "concurrency": 8, **queue}},
    }
    path.write_text(yaml.safe_dump(data))
    return Process(path, port, control)
