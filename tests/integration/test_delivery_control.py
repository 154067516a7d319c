"""The queues on the control port (token, audit, 404s), in /status and /metrics, and
across reloads; a store that cannot open."""

from __future__ import annotations

import asyncio

from proxy.config.model import Config
from proxy.delivery.sqlite_store import SqliteStore
from tests.support.delivery import control, delivery_config, post, settled, stats
from tests.support.proxy import config, wait_for
from tests.support.upstream import Step


def sqlite(tmp_path) -> str:
    return f"sqlite://{tmp_path}/outbox.db"


async def test_the_queue_api_needs_the_token_and_actions_are_post_only(
    proxy_factory, upstream, client, tmp_path
) -> None:
    data = delivery_config(upstream.url, sqlite(tmp_path))
    (tmp_path / "token").write_text("s3cret\n")
    data["control"]["token_file"] = str(tmp_path / "token")
    proxy = await proxy_factory(data)
    base, auth = proxy.control_url, {"authorization": "Bearer s3cret"}
    async with client.get(base + "/queues") as resp:
        assert resp.status == 401
    async with client.post(base + "/queues/outbox/pause") as resp:
        assert resp.status == 401 and not stats(proxy)["paused"]

    async def call(method: str, path: str) -> tuple[int, dict]:
        async with client.request(method, base + path, headers=auth) as resp:
            return resp.status, await resp.json()

    status, listed = await call("GET", "/queues")
    assert status == 200 and listed["queues"]["outbox"]["store"] == "sqlite"
    assert (await call("GET", "/queues/outbox/pause"))[0] == 405
    assert await call("POST", "/queues/inbox/pause") == (
        404,
        {"error": "no_queue", "queue": "inbox"},
    )
    status, answer = await call("GET", "/queues/outbox/messages/nope")
    assert (status, answer["error"]) == (404, "no_message")
    status, answer = await call("GET", "/queues/outbox/dead?limit=0")
    assert (status, answer["error"]) == (400, "bad_limit")
    assert (await call("POST", "/queues/outbox/dead/nope/retry"))[0] == 404
    assert (await call("POST", "/queues/outbox/dead/nope/delete"))[0] == 404


async def test_pause_resume_delete_and_retry_all_are_audited(
    proxy_factory, upstream, client, tmp_path
) -> None:
    upstream.default = Step(404)
    proxy = await proxy_factory(delivery_config(upstream.url, sqlite(tmp_path)))
    ids = [(await post(client, proxy.url, b"%d" % i))[1]["id"] for i in range(2)]
    await wait_for(lambda: _true(stats(proxy)["dead"] == 2))
    status, view = await control(client, proxy, "POST", "/queues/outbox/pause")
    assert status == 200 and view["paused"] is True
    status, done = await control(client, proxy, "POST", f"/queues/outbox/dead/{ids[0]}/delete")
    assert (status, done["deleted"]) == (200, ids[0])
    assert (await control(client, proxy, "GET", f"/queues/outbox/messages/{ids[0]}"))[0] == 404
    upstream.default = Step(200)
    status, done = await control(client, proxy, "POST", "/queues/outbox/dead/retry")
    assert (status, done["retried"]) == (200, 1)
    assert stats(proxy)["depth"] == 1 and len(upstream.seen) == 2  # paused: not yet
    await control(client, proxy, "POST", "/queues/outbox/resume")
    await settled(proxy)
    assert [s.body for s in upstream.seen] == [b"0", b"1", b"1"]
    audit = [(a["action"], a["queue"]) for a in proxy.log_lines() if a.get("event") == "audit"]
    assert audit == [
        ("queue.pause", "outbox"),
        ("queue.delete", "outbox"),
        ("queue.retry_all", "outbox"),
        ("queue.resume", "outbox"),
    ]


async def test_status_and_metrics_show_each_queue_and_a_reload_that_drops_it_drops_its_series(
    proxy_factory, upstream, client, tmp_path
) -> None:
    data = delivery_config(upstream.url, sqlite(tmp_path))
    proxy = await proxy_factory(data)
    await control(client, proxy, "POST", "/queues/outbox/pause")
    await post(client, proxy.url, b"waiting")
    status, view = await control(client, proxy, "GET", "/status")
    assert status == 200
    queue = view["queues"]["outbox"]
    assert (queue["depth"], queue["dead"], queue["paused"], queue["store"]) == (
        1,
        0,
        True,
        "sqlite",
    )
    text = proxy.fender.metrics.render().decode()
    assert 'fender_queue_depth{queue="outbox"} 1.0' in text
    assert 'fender_queue_dead{queue="outbox"} 0.0' in text
    assert 'fender_queue_oldest_seconds{queue="outbox"}' in text
    for result in ("delivered", "retried", "dead", "expired"):  # at 0 for increase()
        assert f'fender_deliveries_total{{queue="outbox",result="{result}"}} 0.0' in text
    assert 'fender_queue_accepts_total{queue="outbox",result="full"} 0.0' in text
    plain = config({"up": {"endpoints": [upstream.url]}})
    await proxy.fender.reload(Config.model_validate(plain))
    text = proxy.fender.metrics.render().decode()
    assert 'queue="outbox"' not in text
    assert "queues" in (await control(client, proxy, "GET", "/status"))[1]


async def test_a_reload_keeps_the_queue_its_messages_and_its_pause(
    proxy_factory, upstream, client, tmp_path
) -> None:
    data = delivery_config(upstream.url, sqlite(tmp_path))
    proxy = await proxy_factory(data)
    runner = proxy.fender.queues.runners["outbox"]
    await control(client, proxy, "POST", "/queues/outbox/pause")
    await post(client, proxy.url, b"kept")
    data["queues"]["outbox"]["schedule"] = ["1s", "2s"]
    await proxy.fender.reload(Config.model_validate(data))
    assert proxy.fender.queues.runners["outbox"] is runner
    assert runner.config.schedule == (1.0, 2.0)
    assert stats(proxy)["paused"] and stats(proxy)["depth"] == 1 and upstream.seen == []
    await control(client, proxy, "POST", "/queues/outbox/resume")
    await settled(proxy)
    assert [s.body for s in upstream.seen] == [b"kept"]


async def test_a_reload_that_moves_a_queue_to_another_file_lets_the_old_one_go(
    proxy_factory, upstream, client, tmp_path
) -> None:
    data = delivery_config(upstream.url, sqlite(tmp_path))
    proxy = await proxy_factory(data)
    old = proxy.fender.queues.runners["outbox"]
    data["queues"]["outbox"]["store"] = f"sqlite://{tmp_path}/moved.db"
    await proxy.fender.reload(Config.model_validate(data))
    new = proxy.fender.queues.runners["outbox"]
    assert new is not old and new.store is not old.store
    await wait_for(lambda: _true(not old.store.ready))  # drained, closed, its lock let go
    assert (await post(client, proxy.url, b"to the new file"))[0] == 202
    await settled(proxy)
    assert [s.body for s in upstream.seen] == [b"to the new file"]
    assert (tmp_path / "moved.db").exists()


async def test_a_stop_during_a_reload_s_drain_puts_the_old_queue_s_deliveries_back(
    proxy_factory, upstream, client, tmp_path
) -> None:
    held = asyncio.Event()
    upstream.default = Step(gate=held)  # the delivery hangs at the upstream
    data = delivery_config(upstream.url, sqlite(tmp_path), drain={"delay": "0s", "timeout": "60s"})
    proxy = await proxy_factory(data)
    old = proxy.fender.queues.runners["outbox"]
    assert (await post(client, proxy.url, b"in flight"))[0] == 202
    await wait_for(lambda: _true(old.deliverer.in_flight == 1))
    data["queues"]["outbox"]["store"] = f"sqlite://{tmp_path}/moved.db"
    await proxy.fender.reload(Config.model_validate(data))  # the old queue drains for 60s
    await proxy.fender.close()  # ... unless Fender stops first: then at once
    assert old.deliverer.in_flight == 0 and not old.store.ready
    held.set()
    again = SqliteStore(tmp_path / "outbox.db", proxy.fender.clock)
    await again.open()
    try:  # the message went back to its queue, its attempt unspent
        stats_now = await again.stats("outbox", proxy.fender.clock.wall())
        assert (stats_now.depth, stats_now.dead) == (1, 0)
    finally:
        await again.close()


async def test_a_pause_is_kept_in_the_store_and_holds_after_a_restart(
    proxy_factory, upstream, client, tmp_path
) -> None:
    data = delivery_config(upstream.url, sqlite(tmp_path))
    proxy = await proxy_factory(data)
    await control(client, proxy, "POST", "/queues/outbox/pause")
    await post(client, proxy.url, b"held")
    await proxy.fender.close()
    again = await proxy_factory(data)
    runner = again.fender.queues.runners["outbox"]
    assert runner.deliverer.paused and stats(again)["depth"] == 1  # before any delivery
    await control(client, again, "POST", "/queues/outbox/resume")
    await settled(again)
    assert [s.body for s in upstream.seen] == [b"held"]


async def test_a_store_that_cannot_open_answers_503_until_it_can(
    proxy_factory, upstream, client, tmp_path
) -> None:
    data = delivery_config(upstream.url, sqlite(tmp_path))
    (tmp_path / "outbox.db").write_bytes(b"not a database, " * 512)  # broken, or another's
    proxy = await proxy_factory(data)
    status, answer, _ = await post(client, proxy.url, b"first")
    assert (status, answer["error"]) == (503, "queue_unavailable")
    assert stats(proxy)["ready"] is False
    (tmp_path / "outbox.db").unlink()
    await wait_for(lambda: _true(stats(proxy)["ready"]))  # looked at again once a second
    assert (await post(client, proxy.url, b"second"))[0] == 202
    await settled(proxy)
    assert [s.body for s in upstream.seen] == [b"second"]
    events = [line.get("event") for line in proxy.log_lines()]
    assert "queue_unavailable" in events and "queue_available" in events


async def _true(value: bool) -> bool:
    return value
