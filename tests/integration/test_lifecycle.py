"""The process: start, SIGTERM drain without losing a request, refusal without the C parser."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import orjson
import pytest

from tests.support.proxy import spawn_fender
from tests.support.upstream import Step

POLICY = """\
version: 1
control: {{address: 127.0.0.1:{control}}}
drain: {{delay: {delay}, timeout: {timeout}}}
listeners:
  - name: egress
    address: 127.0.0.1:{port}
    routes: [{{name: all, upstream: up}}]
upstreams:
  up: {{endpoints: ["{upstream}"]}}
"""


async def start_fender(tmp_path, upstream_url: str, ports, delay="1s", timeout="5s", env=None):
    port, control = ports(), ports()
    path = tmp_path / "fender.yaml"
    text = POLICY.format(
        control=control, delay=delay, timeout=timeout, port=port, upstream=upstream_url
    )
    path.write_text(text)
    proc = await spawn_fender(path, env)
    return proc, port, control


async def wait_ready(client: aiohttp.ClientSession, control: int) -> None:
    for _ in range(200):
        try:
            async with client.get(f"http://127.0.0.1:{control}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("fender did not become ready")


async def test_sigterm_drains_without_losing_accepted_requests(
    tmp_path, upstream, client, unused_tcp_port_factory
):
    proc, port, control = await start_fender(tmp_path, upstream.url, unused_tcp_port_factory)
    try:
        await wait_ready(client, control)
        upstream.default = Step(delay=0.8, body=b"done")

        async def call() -> tuple[int, bytes]:
            async with aiohttp.ClientSession() as own, own.get(f"http://127.0.0.1:{port}/") as resp:
                return resp.status, await resp.read()

        in_flight = [asyncio.create_task(call()) for _ in range(5)]
        while len(upstream.seen) < 5:
            await asyncio.wait_for(upstream.arrived.wait(), 5)
            upstream.arrived.clear()
        proc.send_signal(signal.SIGTERM)
        # Readiness turns at once, while the listener still serves new requests.
        for _ in range(40):
            async with client.get(f"http://127.0.0.1:{control}/readyz") as resp:
                if resp.status == 503:
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("readiness did not turn 503 after SIGTERM")
        late = await call()
        assert late == (200, b"done")
        assert [await t for t in in_flight] == [(200, b"done")] * 5
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await call()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = [orjson.loads(line)["event"] for line in (await proc.stdout.read()).splitlines()]
    assert events[0] == "started" and events[-1] == "stopped"
    assert events.count("request") == 6 and "draining" in events


async def test_requests_still_running_after_drain_timeout_are_aborted(
    tmp_path, upstream, client, unused_tcp_port_factory
):
    proc, port, control = await start_fender(
        tmp_path, upstream.url, unused_tcp_port_factory, delay="0s", timeout="300ms"
    )
    try:
        await wait_ready(client, control)
        upstream.default = Step(hang=True)
        stuck = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/"))
        await asyncio.wait_for(upstream.arrived.wait(), 5)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        with pytest.raises(aiohttp.ClientConnectionError):
            await stuck
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_post_drain_drains_and_exits_like_sigterm(
    tmp_path, upstream, client, unused_tcp_port_factory
):
    proc, _, control = await start_fender(
        tmp_path, upstream.url, unused_tcp_port_factory, delay="0s"
    )
    try:
        await wait_ready(client, control)
        async with client.get(f"http://127.0.0.1:{control}/drain") as resp:
            assert resp.status == 405  # an action is POST only
        async with client.post(f"http://127.0.0.1:{control}/drain") as resp:
            assert resp.status == 202
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [orjson.loads(line) for line in (await proc.stdout.read()).splitlines()]
    audit = [x for x in lines if x["event"] == "audit"]
    assert [x["action"] for x in audit] == ["drain"]
    assert lines[-1]["event"] == "stopped"


async def test_refuses_to_start_without_the_c_http_parser(
    tmp_path, upstream, unused_tcp_port_factory
):
    proc, _, _ = await start_fender(
        tmp_path, upstream.url, unused_tcp_port_factory, env={"AIOHTTP_NO_EXTENSIONS": "1"}
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"C HTTP parser is not in use" in stderr


async def test_port_in_use_is_a_clear_error(tmp_path, upstream, unused_tcp_port_factory):
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    try:
        proc, _, _ = await start_fender(
            tmp_path, upstream.url, iter([port, unused_tcp_port_factory()]).__next__
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        taken.close()
    assert proc.returncode == 1
    (line,) = [orjson.loads(x) for x in stdout.splitlines() if b"start_failed" in x]
    assert "cannot listen" in line["error"] and "address already in use" in line["error"]


async def test_an_idle_keep_alive_connection_does_not_hold_the_exit(
    tmp_path, upstream, client, unused_tcp_port_factory
):
    # After drain.delay the idle connection is closed at once: the exit does not wait for
    # drain.timeout, and the app learns of the close before it sends on a dead socket.
    proc, port, control = await start_fender(
        tmp_path, upstream.url, unused_tcp_port_factory, delay="300ms", timeout="10s"
    )
    try:
        await wait_ready(client, control)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\nok")
        loop = asyncio.get_running_loop()
        signalled = loop.time()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by Fender
        closed = loop.time() - signalled
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        exited = loop.time() - signalled
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert 0.3 <= closed < 2.0 and exited < 3.0  # a kubelet sees delay, not delay + timeout


async def test_open_streams_get_exactly_the_drain_timeout_then_are_cut(
    tmp_path, upstream, client, unused_tcp_port_factory
):
    proc, port, control = await start_fender(
        tmp_path, upstream.url, unused_tcp_port_factory, delay="200ms", timeout="1s"
    )
    try:
        await wait_ready(client, control)
        upstream.default = Step(chunks=[b"first", b"never"], gates=[asyncio.Event()])
        async with aiohttp.ClientSession() as own:
            resp = await own.get(f"http://127.0.0.1:{port}/stream")
            assert await resp.content.readany() == b"first"
            loop = asyncio.get_running_loop()
            signalled = loop.time()
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(aiohttp.ClientPayloadError):  # a cut, never a clean end
                await resp.read()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            exited = loop.time() - signalled
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert 1.2 <= exited < 2.0  # delay + timeout, not delay + 2 x timeout


async def test_a_request_on_its_way_when_the_delay_ends_is_answered_with_close(
    tmp_path, upstream, client, unused_tcp_port_factory
):
    proc, port, control = await start_fender(
        tmp_path, upstream.url, unused_tcp_port_factory, delay="300ms", timeout="5s"
    )
    try:
        await wait_ready(client, control)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a head
        await writer.drain()
        proc.send_signal(signal.SIGTERM)
        await _refused(port)  # past the delay: the listener stopped accepting
        writer.write(b"\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _refused(port: int) -> None:
    """Wait until new connections to `port` are refused (the drain stopped accepting)."""
    for _ in range(200):
        try:
            _, probe = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        probe.close()
        await asyncio.sleep(0.02)
    raise AssertionError("the listener kept accepting")
