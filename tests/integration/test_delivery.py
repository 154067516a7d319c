"""Durable delivery through a real Fender and real upstreams on 127.0.0.1: accepted (202)
once durable, delivered with the route's policies, dead-lettered what cannot be."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from proxy.config.model import Config
from tests.support.delivery import control, delivery_config, post, settled, stats
from tests.support.proxy import wait_for
from tests.support.upstream import Step


def sqlite(tmp_path) -> str:
    return f"sqlite://{tmp_path}/outbox.db"


async def test_a_thousand_messages_through_an_upstream_failing_half_its_calls_are_each_delivered_once_under_one_key(
    proxy_factory, upstream, client, tmp_path
) -> None:
    failing = random.Random(1000)  # half the calls fail (strict alternation would resonate)
    answers: list[int] = []

    def choose(n: int) -> Step:
        answers.append(503 if failing.random() < 0.5 else 200)
        return Step(answers[-1])

    upstream.choose = choose
    proxy = await proxy_factory(
        delivery_config(
            upstream.url, sqlite(tmp_path), queue={"schedule": ["10ms"], "concurrency": 16}
        )
    )

    async def send(i: int) -> tuple[bytes, str]:
        # Half carry the app's own idempotency key: it must be the one delivered.
        headers = {"Idempotency-Key": f"app-{i}"} if i % 2 else {}
        status, answer, head = await post(client, proxy.url, b"message %d" % i, **headers)
        assert status == 202 and head["x-fender-delivery-id"] == answer["id"]
        assert answer["queue"] == "outbox"
        return b"message %d" % i, headers.get("Idempotency-Key", answer["id"])

    expected: dict[bytes, str] = {}
    for start in range(0, 1000, 100):
        expected.update(await asyncio.gather(*(send(i) for i in range(start, start + 100))))
    assert len(set(expected.values())) == 1000
    view = await settled(proxy)
    assert view["dead"] == 0
    keys: dict[bytes, set[str]] = defaultdict(set)
    delivered: dict[bytes, int] = defaultdict(int)
    for seen, answer in zip(upstream.seen, answers, strict=True):
        keys[seen.body].add(seen.headers["idempotency-key"])
        if answer == 200:
            delivered[seen.body] += 1
    assert {body: key for body, (key,) in keys.items()} == expected  # one key per message
    assert set(delivered) == set(expected) and set(delivered.values()) == {1}
    assert answers.count(503) > 700  # the failures were real, and retried
    assert proxy.metric("fender_deliveries_total", queue="outbox", result="delivered") == 1000
    assert proxy.metric("fender_queue_accepts_total", queue="outbox", result="accepted") == 1000


async def test_a_422_is_a_dead_letter_at_once_and_a_retry_after_the_fix_delivers_it(
    proxy_factory, upstream, client, tmp_path
) -> None:
    upstream.default = Step(422, body=b'{"error": "bad phone number +49 151 ..."}')
    proxy = await proxy_factory(delivery_config(upstream.url, sqlite(tmp_path)))
    _, answer, _ = await post(
        client, proxy.url, b'{"to": "+4915112345678"}', Authorization="Bearer app-token"
    )
    message_id = answer["id"]
    await wait_for(lambda: _true(stats(proxy)["dead"] == 1))
    assert len(upstream.seen) == 1  # not retried
    status, view = await control(client, proxy, "GET", f"/queues/outbox/messages/{message_id}")
    assert status == 200
    assert (view["state"], view["attempts"], view["reason"]) == ("dead", 1, "rejected")
    assert view["last_answer"]["status"] == 422
    text = repr(view)
    assert "4915112345678" not in text and "app-token" not in text  # no body, no values
    assert "authorization" in view["header_names"]
    status, dead = await control(client, proxy, "GET", "/queues/outbox/dead?limit=10")
    assert status == 200 and [d["id"] for d in dead["dead"]] == [message_id]
    assert proxy.metric("fender_deliveries_total", queue="outbox", result="dead") == 1
    assert proxy.metric("fender_queue_dead", queue="outbox") == 1

    upstream.default = Step(200)  # the fix
    status, done = await control(client, proxy, "POST", f"/queues/outbox/dead/{message_id}/retry")
    assert (status, done["retried"]) == (200, 1)
    await settled(proxy)
    _, view = await control(client, proxy, "GET", f"/queues/outbox/messages/{message_id}")
    assert (view["state"], view["attempts"]) == ("delivered", 1)
    assert [a["status"] for a in view["history"]] == [422, 200]
    assert upstream.seen[-1].body == b'{"to": "+4915112345678"}'
    assert upstream.seen[-1].headers["idempotency-key"] == message_id
    audit = [line for line in proxy.log_lines() if line.get("event") == "audit"]
    assert [(a["action"], a["id"]) for a in audit] == [("queue.retry", message_id)]


async def test_a_full_queue_answers_503_queue_full_never_a_silent_drop(
    proxy_factory, upstream, client, tmp_path
) -> None:
    proxy = await proxy_factory(
        delivery_config(upstream.url, sqlite(tmp_path), queue={"max_messages": 3})
    )
    assert (await control(client, proxy, "POST", "/queues/outbox/pause"))[0] == 200
    for i in range(3):
        assert (await post(client, proxy.url, b"%d" % i))[0] == 202
    status, answer, head = await post(client, proxy.url, b"4")
    assert status == 503 and answer["error"] == "queue_full"
    assert head["x-fender-reason"] == "queue_full" and head["retry-after"] == "5"
    assert proxy.metric("fender_queue_accepts_total", queue="outbox", result="full") == 1
    assert stats(proxy)["depth"] == 3 and upstream.seen == []
    await control(client, proxy, "POST", "/queues/outbox/resume")
    await settled(proxy)
    assert sorted(s.body for s in upstream.seen) == [b"0", b"1", b"2"]


async def test_the_apps_idempotency_key_answers_the_same_id_and_delivers_once(
    proxy_factory, upstream, client, tmp_path
) -> None:
    proxy = await proxy_factory(delivery_config(upstream.url, sqlite(tmp_path)))
    first = await post(client, proxy.url, b"pay 10", **{"Idempotency-Key": "order-7"})
    again = await post(client, proxy.url, b"pay 10", **{"Idempotency-Key": "order-7"})
    assert first[0] == again[0] == 202 and first[1]["id"] == again[1]["id"]
    await settled(proxy)
    assert [s.headers["idempotency-key"] for s in upstream.seen] == ["order-7"]
    assert proxy.metric("fender_queue_accepts_total", queue="outbox", result="duplicate") == 1


async def test_a_blank_idempotency_key_is_no_key(proxy_factory, upstream, client, tmp_path) -> None:
    proxy = await proxy_factory(delivery_config(upstream.url, sqlite(tmp_path)))
    first = await post(client, proxy.url, b"pay 10", **{"Idempotency-Key": ""})
    second = await post(client, proxy.url, b"pay 20", **{"Idempotency-Key": " "})
    assert first[0] == second[0] == 202 and first[1]["id"] != second[1]["id"]
    await settled(proxy)
    keys = {s.body: s.headers.getall("idempotency-key") for s in upstream.seen}
    assert keys == {b"pay 10": [first[1]["id"]], b"pay 20": [second[1]["id"]]}


async def test_headers_set_values_are_never_stored_and_a_rotated_key_is_the_one_used(
    proxy_factory, upstream, client, tmp_path
) -> None:
    def policy(secret: str) -> dict:
        return delivery_config(
            upstream.url,
            sqlite(tmp_path),
            upstream={"headers": {"set": {"authorization": f"Bearer {secret}"}}},
        )

    proxy = await proxy_factory(policy("old-secret-1"))
    await control(client, proxy, "POST", "/queues/outbox/pause")
    status, _, _ = await post(client, proxy.url, b"hello", Authorization="Bearer app's own")
    assert status == 202
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("outbox.db*"))
    assert b"hello" in on_disk and b"old-secret-1" not in on_disk
    await proxy.fender.reload(Config.model_validate(policy("new-secret-2")))
    await control(client, proxy, "POST", "/queues/outbox/resume")
    await settled(proxy)
    (seen,) = upstream.seen
    assert seen.headers.getall("authorization") == ["Bearer new-secret-2"]


async def test_an_open_circuit_pauses_the_queue_without_spending_attempts(
    proxy_factory, upstream, client, tmp_path
) -> None:
    upstream.push(Step(503))  # trips the breaker; then the upstream is fine again
    proxy = await proxy_factory(
        delivery_config(
            upstream.url,
            sqlite(tmp_path),
            queue={"concurrency": 1},
            upstream={"circuit_breaker": {"consecutive_failures": 1, "open_for": "300ms"}},
        )
    )
    await control(client, proxy, "POST", "/queues/outbox/pause")
    ids = [(await post(client, proxy.url, b"%d" % i))[1]["id"] for i in range(5)]
    await control(client, proxy, "POST", "/queues/outbox/resume")
    await settled(proxy)
    assert [s.body for s in upstream.seen] == [b"0", b"0", b"1", b"2", b"3", b"4"]
    attempts = []
    for message_id in ids:
        _, view = await control(client, proxy, "GET", f"/queues/outbox/messages/{message_id}")
        assert view["state"] == "delivered"
        attempts.append(view["attempts"])
    assert attempts == [2, 1, 1, 1, 1]  # circuit_open answers spent nothing
    assert proxy.metric("fender_rejections_total", route="send", reason="circuit_open") >= 1
    assert "queue_cooling" in [line.get("event") for line in proxy.log_lines()]


async def test_a_fallback_answer_is_never_a_delivery(
    proxy_factory, upstream, client, tmp_path
) -> None:
    upstream.push(Step(503))
    fallback = {"chain": [{"static": {"status": 200, "body": "fine, really"}}]}
    proxy = await proxy_factory(
        delivery_config(upstream.url, sqlite(tmp_path), policy={"fallback": fallback})
    )
    await post(client, proxy.url, b"note")
    await settled(proxy)
    assert [s.body for s in upstream.seen] == [b"note", b"note"]
    assert proxy.metric("fender_deliveries_total", queue="outbox", result="retried") == 1
    assert proxy.metric("fender_fallbacks_total", route="send", kind="static") == 0


async def test_one_tenants_backlog_of_a_thousand_delays_another_tenants_message_one_delivery_at_most(
    proxy_factory, upstream, client, tmp_path
) -> None:
    proxy = await proxy_factory(
        delivery_config(
            upstream.url,
            sqlite(tmp_path),
            queue={"concurrency": 1, "key": "header:x-tenant-id"},
        )
    )
    await control(client, proxy, "POST", "/queues/outbox/pause")
    for start in range(0, 1000, 100):
        await asyncio.gather(
            *(
                post(client, proxy.url, b"a%d" % i, x_tenant_id="a")
                for i in range(start, start + 100)
            )
        )
    held = asyncio.Event()
    upstream.push(Step(gate=held))  # the first delivery is in flight when b's comes
    await control(client, proxy, "POST", "/queues/outbox/resume")
    await wait_for(lambda: _true(len(upstream.seen) == 1))
    assert (await post(client, proxy.url, b"b0", x_tenant_id="b"))[0] == 202
    held.set()
    await wait_for(lambda: _true(len(upstream.seen) >= 3))
    assert [s.body for s in upstream.seen[:3]] == [b"a0", b"b0", b"a1"]
    await control(client, proxy, "POST", "/queues/outbox/pause")  # the rest need not go


async def test_a_body_over_max_body_is_refused_413_whole_or_streamed(
    proxy_factory, upstream, client, tmp_path
) -> None:
    proxy = await proxy_factory(
        delivery_config(upstream.url, sqlite(tmp_path), queue={"max_body": "1KiB"})
    )
    status, answer, _ = await post(client, proxy.url, b"x" * 2048)
    assert (status, answer["error"]) == (413, "body_too_large")

    async def chunks():
        for _ in range(4):
            yield b"y" * 512

    async with client.post(proxy.url + "/v1/send", data=chunks()) as resp:
        assert resp.status == 413
    assert (await post(client, proxy.url, b"z" * 1024))[0] == 202
    assert proxy.metric("fender_queue_accepts_total", queue="outbox", result="too_large") == 2


async def test_on_drain_deliveries_in_flight_get_the_grace_then_go_back_unspent(
    proxy_factory, upstream, client, tmp_path
) -> None:
    finish = asyncio.Event()
    upstream.push(Step(gate=finish))  # the first delivery ends within the grace
    upstream.default = Step(hang=True)  # the second one never does
    data = delivery_config(
        upstream.url,
        sqlite(tmp_path),
        queue={"concurrency": 2},
        drain={"delay": "0s", "timeout": "1s"},
    )
    proxy = await proxy_factory(data)
    ids = {(await post(client, proxy.url, b"%d" % i))[1]["id"]: b"%d" % i for i in range(3)}
    await wait_for(lambda: _true(len(upstream.seen) == 2))
    quick = upstream.seen[0].body
    loop = asyncio.get_running_loop()
    started = loop.time()
    draining = asyncio.ensure_future(proxy.fender.drain())
    await wait_for(lambda: _true(proxy.fender.draining))
    finish.set()
    await draining
    assert 0.9 <= loop.time() - started < 3  # the whole drain.timeout, and no more
    upstream.default = Step(200)
    first_process = len(upstream.seen)
    again = await proxy_factory(data)
    await settled(again)
    for message_id in ids:
        _, view = await control(client, again, "GET", f"/queues/outbox/messages/{message_id}")
        assert (view["state"], view["attempts"]) == ("delivered", 1)  # the cut ones: unspent
    resent = sorted(s.body for s in upstream.seen[first_process:])
    assert resent == sorted(set(ids.values()) - {quick})  # what ended in the grace stays done


@pytest.mark.parametrize(
    ("queue", "calls", "reason", "result"),
    [
        ({"max_attempts": 3}, 3, "max_attempts", "dead"),  # out of attempts
        ({"schedule": ["200ms"], "max_age": "500ms"}, 3, "expired", "expired"),  # out of time
    ],
)
async def test_a_message_out_of_attempts_or_time_is_a_dead_letter(
    proxy_factory, upstream, client, tmp_path, queue, calls, reason, result
) -> None:
    upstream.default = Step(503)
    proxy = await proxy_factory(delivery_config(upstream.url, sqlite(tmp_path), queue=queue))
    _, answer, _ = await post(client, proxy.url, b"never")
    path = f"/queues/outbox/messages/{answer['id']}"

    async def dead() -> bool:
        return bool((await control(client, proxy, "GET", path))[1]["state"] == "dead")

    await wait_for(dead, 10)
    _, view = await control(client, proxy, "GET", path)
    assert (view["reason"], view["attempts"], len(upstream.seen)) == (reason, calls, calls)
    assert [a["status"] for a in view["history"]] == [503] * calls
    assert proxy.metric("fender_deliveries_total", queue="outbox", result=result) == 1
    assert proxy.metric("fender_deliveries_total", queue="outbox", result="retried") == calls - 1


async def test_an_upstream_asking_to_wait_longer_than_the_schedule_is_waited(
    proxy_factory, upstream, client, tmp_path
) -> None:
    upstream.push(Step(429, headers={"Retry-After": "1"}))  # the schedule says 50ms
    proxy = await proxy_factory(delivery_config(upstream.url, sqlite(tmp_path)))
    assert (await post(client, proxy.url, b"later"))[0] == 202
    await settled(proxy)
    first, second = upstream.seen
    assert second.at - first.at >= 0.95
    assert proxy.metric("fender_deliveries_total", queue="outbox", result="delivered") == 1


async def _true(value: bool) -> bool:
    return value
