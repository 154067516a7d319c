"""Logging never blocks the proxy: with a stdout nobody reads, Fender keeps answering;
what does not fit the buffer is dropped and counted; a shutdown does not hang on it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import orjson

from tests.integration.test_lifecycle import wait_ready

POLICY = """\
version: 1
control: {{address: 127.0.0.1:{control}}}
drain: {{delay: 0s, timeout: 2s}}
log: {{{log}}}
listeners:
  - name: egress
    address: 127.0.0.1:{port}
    routes: [{{name: api, upstream: up, match: {{path_prefix: /api/}}}}]
upstreams:
  up: {{endpoints: ["http://127.0.0.1:9"]}}
"""
REQUESTS = 2000  # about 400 KiB of access lines: several times a pipe's 64 KiB


async def spawn_on_a_pipe(
    tmp_path, ports, log: str = ""
) -> tuple[asyncio.subprocess.Process, int, int, int]:
    """Fender whose stdout is a pipe that nobody reads until the test says so."""
    port, control = ports(), ports()
    path = tmp_path / "fender.yaml"
    path.write_text(POLICY.format(control=control, port=port, log=log))
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "run", "-c", str(path), stdout=write_end
    )
    os.close(write_end)
    return proc, read_end, port, control


async def read_all(fd: int) -> bytes:
    def read() -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)
        return b"".join(chunks)

    return await asyncio.to_thread(read)


async def flood(port: int) -> None:
    """REQUESTS requests no route takes (each one access line), four at a time."""

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in range(REQUESTS // 4):
            async with session.get(f"http://127.0.0.1:{port}/nowhere") as resp:
                assert resp.status == 404

    async with aiohttp.ClientSession() as session:
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(4))), 30)


async def livez_seconds(client: aiohttp.ClientSession, control: int) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.get(
        f"http://127.0.0.1:{control}/livez", timeout=aiohttp.ClientTimeout(total=5)
    ) as resp:
        assert resp.status == 200
    return loop.time() - started


async def test_an_unread_stdout_never_stalls_the_proxy_and_a_stop_writes_it_all(
    tmp_path, client, unused_tcp_port_factory
):
    proc, read_end, port, control = await spawn_on_a_pipe(tmp_path, unused_tcp_port_factory)
    try:
        await wait_ready(client, control)
        await flood(port)  # the pipe filled long before the end
        assert await livez_seconds(client, control) < 0.5
        proc.send_signal(signal.SIGTERM)
        out = await read_all(read_end)  # someone reads at last: everything pending arrives
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [orjson.loads(line)["event"] for line in out.splitlines()]
    assert events[0] == "started" and events[-1] == "stopped"
    assert events.count("request") == REQUESTS


async def test_what_does_not_fit_the_buffer_is_dropped_and_counted(
    tmp_path, client, unused_tcp_port_factory
):
    proc, read_end, port, control = await spawn_on_a_pipe(
        tmp_path, unused_tcp_port_factory, log="buffer: 16KiB"
    )
    try:
        await wait_ready(client, control)
        await flood(port)
        assert await livez_seconds(client, control) < 0.5
        async with client.get(f"http://127.0.0.1:{control}/metrics") as resp:
            text = await resp.text()
        (dropped,) = [
            x for x in text.splitlines() if x.startswith("fender_log_lines_dropped_total ")
        ]
        assert float(dropped.split()[1]) > REQUESTS / 2
        proc.send_signal(signal.SIGTERM)
        # Still nobody reads: the final flush waits a bounded while, then Fender exits.
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await read_all(read_end)
