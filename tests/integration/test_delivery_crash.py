"""Nothing that got a 202 is lost: real Fender processes killed with SIGKILL at the worst
moments and started again on the same SQLite file, and a disk that fails writes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest

from tests.support.delivery import Process, control, fender_process
from tests.support.proxy import wait_for
from tests.support.upstream import ScriptedUpstream, Step


def processes(tmp_path: Path, ports, upstream_port: int, store: Path | None = None) -> Process:
    """One Fender on an SQLite queue (the same file each time it is started again)."""
    url = f"sqlite://{store or tmp_path / 'outbox.db'}"
    return fender_process(tmp_path / "fender.yaml", ports, upstream_port, url, max_attempts=1000)


async def accept(client: aiohttp.ClientSession, url: str, count: int) -> dict[bytes, str]:
    """Send `count` messages, 50 at a time; the body and delivery id of each 202."""

    async def one(i: int) -> tuple[bytes, str]:
        async with client.post(url + "/send", data=b"message %d" % i) as resp:
            assert resp.status == 202
            return b"message %d" % i, (await resp.json())["id"]

    ids: dict[bytes, str] = {}
    for start in range(0, count, 50):
        ids.update(await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50)))))
    return ids


async def delivered_all(
    client: aiohttp.ClientSession, fender: Process, upstream: ScriptedUpstream, ids: dict
) -> None:
    async def done() -> bool:
        return {s.body for s in upstream.seen if s.body in ids} == set(ids)

    async def settled() -> bool:  # the last settlement may follow the upstream's answer
        url = f"http://127.0.0.1:{fender.control}"
        status, queues = await control(client, url, "GET", "/queues")
        assert status == 200
        return bool(
            (queues["queues"]["outbox"]["dead"], queues["queues"]["outbox"]["depth"]) == (0, 0)
        )

    await wait_for(done, 20)
    await wait_for(settled, 10)
    keys: dict[bytes, set[str]] = defaultdict(set)
    for seen in upstream.seen:
        keys[seen.body].add(seen.headers["idempotency-key"])
    assert {body: key for body, (key,) in keys.items()} == ids  # the same key every time


async def test_kill_9_after_500_accepts_with_the_upstream_down_loses_nothing(
    tmp_path, client, aiohttp_server, unused_tcp_port_factory
) -> None:
    upstream_port = unused_tcp_port_factory()  # nothing listens there: down
    fender = processes(tmp_path, unused_tcp_port_factory, upstream_port)
    await fender.start(client)
    try:
        ids = await accept(client, fender.url, 500)
        await fender.kill()
        upstream = ScriptedUpstream()
        await aiohttp_server(upstream.app, port=upstream_port)  # up again
        await fender.start(client)
        await delivered_all(client, fender, upstream, ids)
    finally:
        await fender.stop()


async def test_kill_9_with_deliveries_in_flight_loses_nothing_and_resends_under_the_same_key(
    tmp_path, client, aiohttp_server, unused_tcp_port_factory
) -> None:
    upstream = ScriptedUpstream()
    held = asyncio.Event()
    upstream.default = Step(gate=held)  # every delivery hangs at the upstream
    server = await aiohttp_server(upstream.app)
    fender = processes(tmp_path, unused_tcp_port_factory, server.port)
    await fender.start(client)
    try:
        ids = await accept(client, fender.url, 500)
        await wait_for(lambda: _true(len(upstream.seen) >= 8))  # concurrency: 8 in flight
        in_flight = {s.body for s in upstream.seen}
        await fender.kill()
        upstream.default = Step(200)
        held.set()  # the hung answers go nowhere: their connections died with the process
        await fender.start(client)
        await delivered_all(client, fender, upstream, ids)
        again = [s.body for s in upstream.seen[len(in_flight) :] if s.body in in_flight]
        assert sorted(again) == sorted(in_flight)  # at least once: they went again
    finally:
        await fender.stop()


def _mount(*args: str) -> bool:
    """`mount ARGS` (or `umount` when the first is "-u"): True when it worked."""
    command = ["umount", *args[1:]] if args[0] == "-u" else ["mount", *args]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def _can_mount_tmpfs(where: Path) -> bool:
    where.mkdir()
    return _mount("-t", "tmpfs", "-o", "size=768k", "tmpfs", str(where))


@pytest.mark.parametrize("disk", ["file_size_limit", "full_tmpfs"])
async def test_a_disk_that_fails_writes_answers_503_and_every_202_is_kept(
    disk, tmp_path, client, aiohttp_server, unused_tcp_port_factory
) -> None:
    """Writes fail as a full disk makes them fail: by a file size limit on the process
    (EFBIG, works anywhere), or on a small tmpfs filled up (ENOSPC, needs root)."""
    store = tmp_path / "outbox.db"
    mounted = tmp_path / "small"
    if disk == "full_tmpfs":
        if os.geteuid() != 0 or not _can_mount_tmpfs(mounted):
            pytest.skip("mounting a tmpfs needs root and a kernel that allows it here")
        store = mounted / "outbox.db"
    upstream_port = unused_tcp_port_factory()  # down: accepted messages stay on disk
    fender = processes(tmp_path, unused_tcp_port_factory, upstream_port, store)
    if disk == "file_size_limit":
        fender.file_limit = 512 * 1024
    try:
        await fender.start(client)
        accepted: set[bytes] = set()
        refused: set[bytes] = set()
        for i in range(3000):
            body = b"message %d " % i + b"x" * 400
            async with client.post(fender.url + "/send", data=body) as resp:
                if resp.status == 202:
                    accepted.add(body)
                    continue
                answer = await resp.json()
                assert (resp.status, answer["error"]) == (503, "queue_unavailable")
                assert resp.headers["x-fender-reason"] == "queue_unavailable"
                refused.add(body)
                if len(refused) >= 20:
                    break
        assert len(refused) >= 20 and len(accepted) >= 10
        await fender.kill()
        if disk == "full_tmpfs":  # the same file, on a disk with room again
            assert _mount("-o", "remount,size=64m", str(mounted))
        fender.file_limit = None
        upstream = ScriptedUpstream()
        await aiohttp_server(upstream.app, port=upstream_port)
        await fender.start(client)
        await wait_for(lambda: _true({s.body for s in upstream.seen} >= accepted), 20)
        assert not {s.body for s in upstream.seen} & refused  # a 503 kept nothing
    finally:
        await fender.stop()
        if disk == "full_tmpfs" and mounted.is_mount():
            _mount("-u", "-l", str(mounted))


async def _true(value: bool) -> bool:
    return value
