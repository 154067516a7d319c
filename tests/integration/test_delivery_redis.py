"""Queues in Redis Streams: shared by replicas, taken over from a replica that died, dead
letters seen by all; a Redis that is down answers 503, never 202."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from proxy.delivery.message import FAIL, NewMessage, Settlement, attempt_record, new_id
from proxy.delivery.redis_store import CLAIM_EVERY, GROUP, RedisStore
from tests.support.clock import FakeClock
from tests.support.delivery import control, delivery_config, fender_process, post, stats
from tests.support.proxy import wait_for
from tests.support.upstream import ScriptedUpstream, Step

STREAM = "fender:q:{outbox}:stream"


async def test_two_replicas_share_a_queue_and_one_takes_over_what_a_killed_one_held(
    tmp_path, client, aiohttp_server, redis_url, unused_tcp_port_factory
) -> None:
    upstream = ScriptedUpstream()
    held = asyncio.Event()
    upstream.default = Step(gate=held)  # deliveries hang at the upstream until released
    server = await aiohttp_server(upstream.app)
    replicas = [
        fender_process(
            tmp_path / f"{name}.yaml",
            unused_tcp_port_factory,
            server.port,
            redis_url,
            concurrency=4,
            delivery_timeout="1s",
        )
        for name in ("a", "b")
    ]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for replica in replicas:
            await replica.start(client)
        ids: dict[bytes, str] = {}
        for i in range(40):  # the app's calls go to either replica
            async with client.post(replicas[i % 2].url + "/send", data=b"m%d" % i) as resp:
                assert resp.status == 202
                ids[b"m%d" % i] = (await resp.json())["id"]
        await wait_for(lambda: _true(len(upstream.seen) >= 8))  # 4 in flight at each
        killed = replicas[0].proc
        assert killed is not None
        pending = await redis.xpending(STREAM, "fender")
        (name,) = [
            c["name"] for c in pending["consumers"] if f":{killed.pid}:" in c["name"].decode()
        ]
        entries = await redis.xpending_range(STREAM, "fender", "-", "+", 100, consumername=name)
        held_ids = set()
        for entry in entries:
            ((_, fields),) = await redis.xrange(STREAM, entry["message_id"], entry["message_id"])
            held_ids.add(fields[b"id"].decode())
        assert len(held_ids) == 4  # the replica about to die holds four messages
        held_there = {body for body, message_id in ids.items() if message_id in held_ids}
        killed.kill()
        await killed.wait()
        upstream.default = Step(200)
        held.set()

        async def all_delivered() -> bool:
            bodies = [s.body for s in upstream.seen]
            return set(bodies) >= set(ids) and all(bodies.count(b) == 2 for b in held_there)

        await wait_for(all_delivered, 20)
        assert len(upstream.seen) == 44  # the 40, and again the 4 the dead replica held

        async def none_waits() -> bool:  # the last settlement may follow the answer
            return bool(await redis.zcard("fender:q:{outbox}:waiting") == 0)

        await wait_for(none_waits, 10)
        keys = {(s.body, s.headers["idempotency-key"]) for s in upstream.seen}
        assert keys == set(ids.items())  # taken over with the same Idempotency-Key
    finally:
        await redis.aclose()
        for replica in replicas:
            await replica.stop()


async def test_dead_letters_are_shared_and_retried_from_any_replica(
    proxy_factory, upstream, client, redis_url
) -> None:
    upstream.default = Step(422)
    data = delivery_config(upstream.url, redis_url)
    first, second = await proxy_factory(data), await proxy_factory(data)
    status, answer, _ = await post(client, first.url, b"to the dead")
    assert status == 202
    message_id = answer["id"]

    async def dead_on_the_other() -> bool:
        _, dead = await control(client, second, "GET", "/queues/outbox/dead")
        return [d["id"] for d in dead["dead"]] == [message_id]

    await wait_for(dead_on_the_other)
    _, view = await control(client, second, "GET", f"/queues/outbox/messages/{message_id}")
    assert (view["state"], view["attempts"], view["last_answer"]["status"]) == ("dead", 1, 422)
    assert "to the dead" not in repr(view)
    upstream.default = Step(200)
    status, done = await control(client, second, "POST", "/queues/outbox/dead/retry")
    assert (status, done["retried"]) == (200, 1)

    async def delivered() -> bool:
        _, view = await control(client, first, "GET", f"/queues/outbox/messages/{message_id}")
        return bool(view["state"] == "delivered")

    await wait_for(delivered)
    assert [s.body for s in upstream.seen] == [b"to the dead"] * 2


async def test_an_idempotency_key_and_max_messages_hold_across_replicas(
    proxy_factory, upstream, client, redis_url
) -> None:
    data = delivery_config(upstream.url, redis_url, queue={"max_messages": 2})
    first, second = await proxy_factory(data), await proxy_factory(data)
    assert (await control(client, first, "POST", "/queues/outbox/pause"))[0] == 200
    a = await post(client, first.url, b"x", **{"Idempotency-Key": "k1"})
    b = await post(client, second.url, b"x", **{"Idempotency-Key": "k1"})
    assert a[0] == b[0] == 202 and a[1]["id"] == b[1]["id"]
    assert (await post(client, second.url, b"y"))[0] == 202
    status, answer, _ = await post(client, first.url, b"z")
    assert (status, answer["error"]) == (503, "queue_full")
    await control(client, second, "POST", "/queues/outbox/resume")  # shared: both resume
    await wait_for(lambda: _true(len(upstream.seen) == 2))
    assert sorted(s.body for s in upstream.seen) == [b"x", b"y"]
    assert stats(first)["store"] == "redis"


async def test_a_redis_that_is_down_answers_503_never_202(
    proxy_factory, upstream, client, redis_server, redis_url
) -> None:
    proxy = await proxy_factory(delivery_config(upstream.url, redis_url))
    assert (await post(client, proxy.url, b"before"))[0] == 202
    await wait_for(lambda: _true(len(upstream.seen) == 1))
    redis_server.stop()
    try:
        status, answer, head = await post(client, proxy.url, b"while down")
        assert (status, answer["error"]) == (503, "queue_unavailable")
        assert head["retry-after"] == "1"
    finally:
        redis_server.start()  # empty (the tests' Redis keeps nothing): the group is made again
    assert proxy.metric("fender_queue_accepts_total", queue="outbox", result="unavailable") == 1
    assert (await post(client, proxy.url, b"after"))[0] == 202
    await wait_for(lambda: _true(len(upstream.seen) == 2))
    assert [s.body for s in upstream.seen] == [b"before", b"after"]


async def _true(value: bool) -> bool:
    return value


async def test_what_a_dead_replica_held_behind_live_ones_is_taken_over(redis_url) -> None:
    """XAUTOCLAIM scans a bounded part of the pending list per call: each scan must go on
    where the last one ended, or what sits behind the live replicas' entries is never seen."""
    clock = FakeClock()
    store = RedisStore(redis_url, clock, "me")
    await store.open()
    r = aioredis.from_url(redis_url)
    try:
        for n in range(30):
            message = NewMessage(new_id(clock.wall()), "send", "POST", "/", b"", b"%d" % n,
                                 "rid", "", None, clock.wall())  # fmt: skip
            await store.accept("outbox", message, max_messages=100, dedup_since=0.0)
        await r.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=30)  # a replica took them all
        entries = [entry for entry, _ in await r.xrange(STREAM)]
        await r.xclaim(STREAM, GROUP, "live", 0, entries[:25], idle=0)  # busy with these
        await r.xclaim(STREAM, GROUP, "dead", 0, entries[25:], idle=600_000)  # it died
        taken = []
        for _ in range(4):  # more scans than the pending list needs at ten entries a scan
            clock.advance(CLAIM_EVERY)
            taken += await store.take("outbox", 1, clock.wall(), 1.0)
        bodies = [m.body for m in taken]
        assert bodies and set(bodies) <= {b"%d" % n for n in range(25, 30)}  # the dead's only
    finally:
        await r.aclose()
        await store.close()


async def test_a_deleted_dead_letter_takes_its_idempotency_key_with_it(redis_url) -> None:
    clock = FakeClock()
    store = RedisStore(redis_url, clock, "me")
    await store.open()

    async def accept(body: bytes) -> tuple[str, bool]:
        message = NewMessage(new_id(clock.wall()), "send", "POST", "/", b"", body, "rid", "",
                             "order-7", clock.wall())  # fmt: skip
        return await store.accept("outbox", message, max_messages=10, dedup_since=0.0)

    try:
        first, _ = await accept(b"a")
        (taken,) = await store.take("outbox", 1, clock.wall(), 1.0)
        record = attempt_record(clock.wall(), 422, "", 3.0)
        await store.settle("outbox", taken, Settlement(FAIL, record, reason="rejected"))
        assert await accept(b"b") == (first, True)  # a dead letter still deduplicates
        assert await store.delete("outbox", first) is True
        again, duplicate = await accept(b"c")  # as in SQLite: sent again, a new message
        assert again != first and not duplicate
    finally:
        await store.close()
