"""A fleet for the tests: several real Fender processes on one policy file, and a TCP
proxy that makes a Redis slow.

The replicas share one file (their ports come from the environment, so the file, and
with it the default fleet name, its hash, is the same for all). Each one's stdout (the
JSON log) is read as it comes, so that a full pipe never stalls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.proxy import spawn_fender
from tests.support.redis_server import free_port


class Replica:
    def __init__(self, proc: Any, port: int, control: int) -> None:
        self.proc = proc
        self.port = port
        self.control = control
        self.lines: list[dict[str, Any]] = []
        self._reader = asyncio.ensure_future(self._read())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control}"

    async def _read(self) -> None:
        async for line in self.proc.stdout:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.lines.append(orjson.loads(line))

    async def status(self, client: aiohttp.ClientSession) -> dict[str, Any]:
        async with client.get(f"{self.control_url}/status") as resp:
            data: dict[str, Any] = await resp.json()
            return data

    async def metrics(self, client: aiohttp.ClientSession) -> str:
        async with client.get(f"{self.control_url}/metrics") as resp:
            return await resp.text()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value in Prometheus text, or None when there is no such series."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def policy_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    """The replicas' file: listener and control ports from $PORT and $CONTROL."""
    data = {
        "version": 1,
        "control": {"address": "127.0.0.1:${CONTROL}"},
        "drain": {"delay": "0s", "timeout": "2s"},
        "log": {"access": True},
        "reload": {"watch": False},
        **data,
    }
    data["listeners"][0]["address"] = "127.0.0.1:${PORT}"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def start_replicas(path: Path, count: int, client: aiohttp.ClientSession) -> list[Replica]:
    """`count` Fender processes on the file, each ready (its /readyz says 200)."""
    replicas = []
    for _ in range(count):
        port, control = free_port(), free_port()
        proc = await spawn_fender(path, env={"PORT": str(port), "CONTROL": str(control)})
        replicas.append(Replica(proc, port, control))
    for replica in replicas:
        for _ in range(300):
            if replica.proc.returncode is not None:
                err = await replica.proc.stderr.read()
                raise AssertionError(f"a replica exited: {err.decode()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(f"{replica.control_url}/readyz") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a replica did not become ready in 15 s")
    return replicas


async def counted(replicas: list[Replica], client: aiohttp.ClientSession, n: int) -> None:
    """Wait (bounded) until every replica counts `n` live replicas with Redis up."""
    for _ in range(100):
        views = [(await r.status(client))["fleet"] for r in replicas]
        if all(v["replicas"] == n and v["redis"] == "up" for v in views):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the replicas did not count {n}: {views}")


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    took: float  # seconds
    sent: float  # loop time


async def hammer(
    client: aiohttp.ClientSession,
    url: str,
    per_second: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    offset: float = 0.0,
) -> list[Answer]:
    """Requests on a fixed schedule (not waiting for answers), the first after `offset`
    seconds, and what each got."""
    loop = asyncio.get_running_loop()

    async def one() -> Answer:
        sent = loop.time()
        async with client.get(url, headers=headers) as resp:
            await resp.read()
            return Answer(resp.status, dict(resp.headers), loop.time() - sent, sent)

    tasks, start, i = [], loop.time() + offset, 0
    while (due := start + i / per_second) < start + seconds:
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.ensure_future(one()))
        i += 1
    return list(await asyncio.gather(*tasks))


class DelayProxy:
    """TCP in front of a server: what the server sends back arrives `delay` s later
    (settable while running), in order."""

    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        loop = asyncio.get_running_loop()

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self.delay:
                    loop.call_later(self.delay, _write, writer, data)
                else:
                    writer.write(data)
            loop.call_later(self.delay, writer.close)

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())

    async def close(self) -> None:
        """Stop: no new connection, and every open one cut."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if not writer.is_closing():
        writer.write(data)
