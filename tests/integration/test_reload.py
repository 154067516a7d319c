"""Hot reload: nothing lost under load, state kept where the config is unchanged, a bad
file changes nothing, and the real triggers (POST /reload, SIGHUP, a ConfigMap swap)."""

from __future__ import annotations

import asyncio
import io
import os
import signal

import aiohttp
import orjson
import yaml

from proxy.app import Fender
from proxy.config.model import load_config
from proxy.observe.logs import JsonLog
from tests.support.proxy import spawn_fender, wait_for
from tests.support.upstream import ScriptedUpstream, Step


def policy(steady: str, versioned: str, version: str, **extra) -> dict:
    return {
        "version": 1,
        "control": {"address": "127.0.0.1:0"},
        "drain": {"delay": "0s", "timeout": "5s"},
        "reload": {"watch": False},
        "listeners": [
            {
                "name": "egress",
                "address": "127.0.0.1:0",
                "routes": [
                    {"name": "steady", "upstream": "steady", "match": {"path_prefix": "/s/"}},
                    {"name": "versioned", "upstream": "versioned"},
                ],
            }
        ],
        "upstreams": {
            "steady": {"endpoints": [steady], "circuit_breaker": {"consecutive_failures": 50}},
            "versioned": {
                "endpoints": [versioned],
                "headers": {"set": {"x-version": version}},
                "pool": {"max_connections": 10 + ord(version)},  # a change the hash shows
            },
        },
        **extra,
    }


async def start(path) -> tuple[Fender, io.BytesIO]:
    log = io.BytesIO()
    fender = Fender(load_config(path), log=JsonLog(log))
    await fender.start()
    return fender, log


async def test_reloads_under_load_lose_nothing_and_keep_unchanged_state(
    upstream, aiohttp_server, client, tmp_path
):
    versioned = ScriptedUpstream()
    versioned.url = f"http://127.0.0.1:{(await aiohttp_server(versioned.app)).port}"
    versioned.default = Step(delay=0.05)
    upstream.default = Step(delay=0.05)
    path = tmp_path / "fender.yaml"
    path.write_text(yaml.safe_dump(policy(upstream.url, versioned.url, "a")))
    fender, _ = await start(path)
    try:
        base, control = (
            f"http://127.0.0.1:{fender.ports['egress']}",
            f"http://127.0.0.1:{fender.ports['control']}",
        )
        steady_breaker = fender.guards["steady"].breaker
        steady_route = fender.generation.routings["egress"].targets["steady"]
        steady_breaker.force("closed", 60)  # state an unchanged upstream must keep
        before = fender.guards["versioned"]
        failures: list[str] = []
        done = asyncio.Event()

        async def worker(prefix: str) -> int:
            count = 0
            while not done.is_set():
                try:
                    async with client.get(f"{base}{prefix}x") as resp:
                        await resp.read()
                        if resp.status != 200:
                            failures.append(f"{prefix}: {resp.status}")
                except aiohttp.ClientError as exc:
                    failures.append(f"{prefix}: {exc!r}")
                count += 1
            return count

        async def stream() -> bytes:
            async with client.get(f"{base}/s/stream") as resp:
                return await resp.read()

        events = [b"data: %d\n\n" % i for i in range(15)]
        upstream.push(*(Step(chunks=events, interval=0.2) for _ in range(2)))
        streams = [asyncio.create_task(stream()) for _ in range(2)]
        await asyncio.sleep(0.05)
        upstream.default = Step(delay=0.05)
        workers = [asyncio.create_task(worker(p)) for p in ("/", "/s/") * 4]
        hashes = set()
        for i in range(6):  # a reload every half second, flipping the versioned upstream
            await asyncio.sleep(0.5)
            path.write_text(yaml.safe_dump(policy(upstream.url, versioned.url, "ab"[(i + 1) % 2])))
            async with client.post(f"{control}/reload") as resp:
                assert resp.status == 200
                hashes.add((await resp.json())["config_hash"])
        done.set()
        served = sum(await asyncio.gather(*workers))
        bodies = await asyncio.gather(*streams)
        assert failures == [] and served > 100
        assert bodies == [b"".join(events)] * 2  # the open streams went on through 6 reloads
        assert {s.headers["x-version"] for s in versioned.seen} == {"a", "b"}
        assert len(hashes) == 2
        assert fender.guards["steady"].breaker is steady_breaker  # unchanged: kept
        assert steady_breaker.status()["override"]["state"] == "closed"
        assert fender.guards["versioned"] is not before  # changed: fresh
        # An unchanged route keeps its pipeline (budget, buckets, stale cache); the one
        # to the changed upstream was rebuilt.
        targets = fender.generation.routings["egress"].targets
        assert targets["steady"] is steady_route
        assert targets["versioned"].handler is not steady_route.handler
        assert fender.metrics.config_reloads.labels("success")._value.get() == 6
    finally:
        await fender.close()


async def test_a_broken_file_keeps_the_running_config(upstream, client, tmp_path):
    path = tmp_path / "fender.yaml"
    path.write_text(yaml.safe_dump(policy(upstream.url, upstream.url, "a")))
    fender, log = await start(path)
    try:
        running = fender.config.hash
        path.write_text(path.read_text().replace("upstream: versioned", "upstream: nowhere"))
        async with client.post(f"http://127.0.0.1:{fender.ports['control']}/reload") as resp:
            assert resp.status == 422
            problems = (await resp.json())["problems"]
        assert any("no upstream named 'nowhere'" in p and f"{path}:" in p for p in problems)
        assert fender.config.hash == running
        async with client.get(f"http://127.0.0.1:{fender.ports['egress']}/x") as resp:
            assert resp.status == 200
        assert fender.metrics.config_reloads.labels("failure")._value.get() == 1
        fender.log.flush()
        events = [orjson.loads(line)["event"] for line in log.getvalue().splitlines()]
        assert "reload_failed" in events
    finally:
        await fender.close()


async def test_sighup_and_a_configmap_swap_reload_a_running_process(
    upstream, client, tmp_path, unused_tcp_port_factory
):
    port, control = unused_tcp_port_factory(), unused_tcp_port_factory()

    def text(prefix: str, watch: bool) -> str:
        data = policy(upstream.url, upstream.url, "a", reload={"watch": watch, "interval": "100ms"})
        data["listeners"][0]["address"] = f"127.0.0.1:{port}"
        data["control"]["address"] = f"127.0.0.1:{control}"
        data["listeners"][0]["routes"][1]["match"] = {"path_prefix": prefix}
        return yaml.safe_dump(data)

    # The layout Kubernetes gives a mounted ConfigMap: the file goes through `..data`.
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "fender.yaml").write_text(text("/one/", watch=True))
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/fender.yaml", tmp_path / "fender.yaml")
    proc = await spawn_fender(tmp_path / "fender.yaml")

    async def status_of(path: str) -> int:
        try:
            async with client.get(f"http://127.0.0.1:{port}{path}") as resp:
                return resp.status
        except aiohttp.ClientConnectionError:
            return 0

    try:
        await wait_for(lambda: _is(status_of("/one/x"), 200))
        # The kubelet's update: a new directory, then an atomic swap of `..data`.
        (tmp_path / "..v2").mkdir()
        (tmp_path / "..v2" / "fender.yaml").write_text(text("/two/", watch=False))
        os.symlink("..v2", tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        await wait_for(lambda: _is(status_of("/two/x"), 200))
        assert await status_of("/one/x") == 404
        # The new file turned watching off: now only SIGHUP reloads it.
        (tmp_path / "..v2" / "fender.yaml").write_text(text("/three/", watch=False))
        proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: _is(status_of("/three/x"), 200))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    events = [orjson.loads(line)["event"] for line in (await proc.stdout.read()).splitlines()]
    assert events.count("reloaded") == 2 and "config_changed" in events


async def _is(value, expected) -> bool:
    return (await value) == expected


async def test_a_changed_secret_alone_is_swapped_in(upstream, client, tmp_path):
    path = tmp_path / "fender.yaml"
    data = policy(upstream.url, upstream.url, "a")
    data["upstreams"]["versioned"]["headers"]["set"]["authorization"] = "Bearer old-key"
    path.write_text(yaml.safe_dump(data))
    fender, _ = await start(path)
    try:
        data["upstreams"]["versioned"]["headers"]["set"]["authorization"] = "Bearer new-key"
        path.write_text(yaml.safe_dump(data))
        running = fender.config.hash
        result = await fender.reload_from_file()
        assert (result.ok, result.config_hash) == (True, running)  # same hash: secrets stay out
        async with client.get(f"http://127.0.0.1:{fender.ports['egress']}/x") as resp:
            assert resp.status == 200
        assert upstream.seen[-1].headers["authorization"] == "Bearer new-key"
    finally:
        await fender.close()


async def test_a_reload_removes_the_series_of_what_it_removed(
    upstream, aiohttp_server, client, tmp_path
):
    other = ScriptedUpstream()
    other.url = f"http://127.0.0.1:{(await aiohttp_server(other.app)).port}"
    gone = {
        "endpoints": [other.url, upstream.url],
        "circuit_breaker": {"consecutive_failures": 1},
        "bulkhead": {"max_concurrent": 5},
        "rate_limit": {"rate": "100/s"},
        "outlier": {},
    }
    data = policy(upstream.url, upstream.url, "a")
    data["upstreams"]["gone"] = gone
    data["upstreams"]["steady"]["endpoints"] = [upstream.url, other.url]
    data["listeners"][0]["routes"].insert(
        0,
        {"name": "old", "upstream": "gone", "match": {"path_prefix": "/old/"}, "policy": "p"},
    )
    data["policies"] = {
        "p": {
            "retry": {"attempts": 2, "backoff": {"base": "1ms"}},
            "rate_limit": {"rate": "100/s"},
            "fallback": {"chain": [{"static": {"body": "sorry"}}]},
        }
    }
    path = tmp_path / "fender.yaml"
    path.write_text(yaml.safe_dump(data))
    fender, _ = await start(path)
    try:
        base = f"http://127.0.0.1:{fender.ports['egress']}"
        other.default = Step(status=503)
        for prefix in ("/old/", "/old/", "/s/", "/s/"):
            async with client.get(f"{base}{prefix}x") as resp:
                await resp.read()

        marks = ('"gone"', '"old"', f'"{other.url}"', ":gone", ":old")

        def series(text: str) -> set[str]:
            """The series that name the removed upstream, route or endpoint."""
            lines = [line for line in text.splitlines() if not line.startswith("#")]
            return {line.split(" ")[0] for line in lines if any(m in line for m in marks)}

        before = series(fender.metrics.render().decode())
        for name in (
            "fender_requests_total",
            "fender_request_duration_seconds_count",
            "fender_upstream_attempts_total",
            "fender_circuit_state",
            "fender_circuit_transitions_total",
            "fender_bulkhead_in_flight",
            "fender_bulkhead_queued",
            "fender_upstream_healthy",
            "fender_retries_total",
            "fender_retry_budget_exhausted_total",
            "fender_fallbacks_total",
        ):
            assert any(s.startswith(name + "{") for s in before), name
        del data["upstreams"]["gone"]
        data["upstreams"]["steady"]["endpoints"] = [upstream.url]  # `other` leaves `steady`
        del data["listeners"][0]["routes"][0]
        del data["policies"]
        path.write_text(yaml.safe_dump(data))
        assert (await fender.reload_from_file()).ok
        assert series(fender.metrics.render().decode()) == set()
        labels = {"route": "steady", "upstream": "steady", "outcome": "ok", "code_class": "2xx"}
        counted = fender.metrics.registry.get_sample_value("fender_requests_total", labels)
        async with client.get(f"{base}/s/x") as resp:  # what stays still counts
            assert resp.status == 200
        after = fender.metrics.registry.get_sample_value("fender_requests_total", labels)
        assert after == counted + 1
    finally:
        await fender.close()


async def test_a_stream_outlives_a_reload_that_changes_its_upstream(upstream, client, tmp_path):
    # An API-key rotation changes the upstream's section: a stream that began before it
    # finishes on the generation it started on, however long past drain.timeout it runs.
    data = policy(upstream.url, upstream.url, "a")
    data["drain"]["timeout"] = "200ms"
    path = tmp_path / "fender.yaml"
    path.write_text(yaml.safe_dump(data))
    fender, _ = await start(path)
    gate = asyncio.Event()
    upstream.push(Step(chunks=[b"before ", b"after"], gates=[gate]))
    try:
        base = f"http://127.0.0.1:{fender.ports['egress']}"
        async with client.get(f"{base}/stream") as resp:
            assert await resp.content.readany() == b"before "
            old = fender.upstreams["versioned"]
            data["upstreams"]["versioned"]["headers"]["set"]["x-version"] = "b"
            path.write_text(yaml.safe_dump(data))
            assert (await fender.reload_from_file()).ok
            assert fender.upstreams["versioned"] is not old
            await asyncio.sleep(0.4)  # twice the drain timeout: the stream is still open
            gate.set()
            assert await resp.content.read() == b"after"
        async with client.get(f"{base}/next") as resp:
            assert resp.status == 200
        assert upstream.seen[-1].headers["x-version"] == "b"
        await wait_for(lambda: _is_zero(old.in_use))  # its pool went with its last reply
    finally:
        await fender.close()


async def _is_zero(value: int) -> bool:
    return value == 0
