"""A reload is all or nothing: whatever makes it fail, the running config stays whole, the
failure is logged, counted and answered in JSON, and the file watcher keeps watching.
Start-up failures are a `start_failed` line and exit status 1, never a traceback."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest
import yaml

import proxy.app
from proxy.config.model import load_config
from proxy.http.upstream import Upstream
from proxy.lifecycle import serve
from proxy.observe.logs import JsonLog
from tests.integration.test_reload import policy, start
from tests.support.proxy import wait_for


def events(fender, log: io.BytesIO, name: str) -> list[dict]:
    fender.log.flush()
    lines = [orjson.loads(line) for line in log.getvalue().splitlines()]
    return [line for line in lines if line["event"] == name]


async def reload(client, fender) -> tuple[int, dict]:
    async with client.post(f"http://127.0.0.1:{fender.ports['control']}/reload") as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def changed(data: dict, **listener) -> dict:
    """The same policy with a changed route and upstream, and maybe a second listener."""
    data = yaml.safe_load(yaml.safe_dump(data))
    data["listeners"][0]["routes"][1]["match"] = {"path_prefix": "/v2/"}
    data["upstreams"]["versioned"]["pool"]["max_connections"] = 7
    data["policies"] = {"p": {"retry": {"attempts": 2}}}
    data["listeners"][0]["routes"][0]["policy"] = "p"
    if listener:
        data["listeners"].append(
            {"name": "second", "routes": [{"name": "second", "upstream": "steady"}], **listener}
        )
    return data


async def assert_unchanged(client, fender, running: str, generation) -> None:
    assert fender.config.hash == running and fender.generation is generation
    async with client.get(f"http://127.0.0.1:{fender.ports['egress']}/x") as resp:
        assert resp.status == 200  # still the old catch-all route
    assert "second" not in fender.ports
    assert fender.metrics.config_reloads.labels("failure")._value.get() == 1
    assert fender.metrics.config_reloads.labels("success")._value.get() == 0
    samples = [s for s in fender.metrics.render().decode().splitlines() if s[0] != "#"]
    assert not [s for s in samples if 'route="second"' in s or "retry_budget" in s]


async def test_a_new_listener_on_a_taken_port_changes_nothing(upstream, client, tmp_path):
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    path = tmp_path / "fender.yaml"
    data = policy(upstream.url, upstream.url, "a")
    path.write_text(yaml.safe_dump(data))
    fender, log = await start(path)
    try:
        running, generation = fender.config.hash, fender.generation
        path.write_text(yaml.safe_dump(changed(data, address=f"127.0.0.1:{port}")))
        status, body = await reload(client, fender)
        assert status == 500 and body["result"] == "failure"
        assert "cannot listen on" in body["error"] and "address already in use" in body["error"]
        await assert_unchanged(client, fender, running, generation)
        (failed,) = events(fender, log, "reload_failed")
        assert failed["error"] == body["error"]
        taken.close()
        await taken.wait_closed()
        status, body = await reload(client, fender)  # the port is free now
        assert (status, body["result"]) == (200, "success")
        assert fender.ports["second"] == port
    finally:
        taken.close()
        await fender.close()


@pytest.mark.parametrize("where", ["build", "upstream_start"])
async def test_anything_raised_while_building_is_json_and_changes_nothing(
    upstream, client, tmp_path, monkeypatch, where
):
    path = tmp_path / "fender.yaml"
    data = policy(upstream.url, upstream.url, "a")
    path.write_text(yaml.safe_dump(data))
    fender, log = await start(path)
    started: list[Upstream] = []
    closed: list[Upstream] = []
    try:
        running, generation = fender.config.hash, fender.generation

        def broken_build(*args, **kw):
            raise RuntimeError("a bug while building")

        real_start, real_close = Upstream.start, Upstream.close

        async def broken_start(self):
            await real_start(self)
            started.append(self)
            if self.name == "versioned":
                raise RuntimeError("a bug while starting")

        async def close(self):
            closed.append(self)
            await real_close(self)

        if where == "build":
            monkeypatch.setattr(proxy.app, "build", broken_build)
        else:
            monkeypatch.setattr(Upstream, "start", broken_start)
            monkeypatch.setattr(Upstream, "close", close)
        path.write_text(yaml.safe_dump(changed(data, address="127.0.0.1:0")))
        status, body = await reload(client, fender)
        assert (status, body["result"]) == (500, "failure")
        assert body["error"].startswith("RuntimeError: a bug while")
        await assert_unchanged(client, fender, running, generation)
        assert set(map(id, started)) <= set(map(id, closed))  # what it started, it closed
        assert len(events(fender, log, "reload_failed")) == 1
    finally:
        monkeypatch.undo()
        await fender.close()


async def test_the_file_watcher_survives_failed_reloads(upstream, client, tmp_path, monkeypatch):
    path = tmp_path / "fender.yaml"
    data = policy(upstream.url, upstream.url, "a", reload={"watch": True, "interval": "50ms"})
    path.write_text(yaml.safe_dump(data))
    fender, log = await start(path)
    try:
        bad = changed(data)
        bad["upstreams"]["versioned"]["tls"] = {"ca_file": "missing-ca.pem"}
        path.write_text(yaml.safe_dump(bad))
        await wait_for(lambda: _async(len(events(fender, log, "reload_failed")) == 1))
        (failed,) = events(fender, log, "reload_failed")
        assert "missing-ca.pem" in " ".join(failed["problems"])

        def broken_build(*args, **kw):
            raise RuntimeError("a bug while building")

        monkeypatch.setattr(proxy.app, "build", broken_build)
        path.write_text(yaml.safe_dump(changed(data, address="127.0.0.1:0")))
        await wait_for(lambda: _async(len(events(fender, log, "reload_failed")) == 2))
        monkeypatch.undo()
        good = changed(data)
        path.write_text(yaml.safe_dump(good))
        await wait_for(lambda: _async(fender.config == load_config(path)))
        async with client.get(f"http://127.0.0.1:{fender.ports['egress']}/v2/x") as resp:
            assert resp.status == 200
        assert fender.metrics.config_reloads.labels("failure")._value.get() == 2
    finally:
        monkeypatch.undo()
        await fender.close()


async def _async(value: bool) -> bool:
    return value


async def test_a_start_up_failure_is_a_start_failed_line_and_exit_1(
    upstream, tmp_path, monkeypatch
):
    path = tmp_path / "fender.yaml"
    path.write_text(yaml.safe_dump(policy(upstream.url, upstream.url, "a")))

    async def broken_start(self):
        raise RuntimeError("a bug while starting")

    monkeypatch.setattr(Upstream, "start", broken_start)
    out = io.BytesIO()
    assert await serve(load_config(path), JsonLog(out)) == 1
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["start_failed"]
    assert lines[0]["error"] == "RuntimeError: a bug while starting"
