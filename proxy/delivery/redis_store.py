"""The fleet's store: a queue in Redis, shared by every replica that names it.

Per queue (keys share the hash tag `{queue}`, so a Redis Cluster keeps them on one slot):
a hash per message; a Stream of ids to deliver, read through the consumer group
`fender` (each entry goes to one replica and sits in its pending list until settled);
sorted sets of the messages waiting (for depth, age and `max_messages`), of those
waiting for a retry (moved into the stream when due, by whichever replica looks first)
and of the dead letters, shared by all. Every change of state is one Lua script, so a
replica that dies halfway leaves nothing half done. A message whose replica died is in
that replica's pending list: after `delivery_timeout` (and a margin) another replica
takes it over with XAUTOCLAIM and delivers it, with the same `Idempotency-Key`.

Durability is Redis's: with `appendfsync always` an accepted message is on disk.
Fairness between keys is not kept across a fleet: a Redis queue is one FIFO.

redis.asyncio needs a current Task (it uses asyncio.timeout), and a request's pipeline
has none (http/pending.py): each call runs as a Task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from ..state.clock import Clock
from . import redis_lua as lua
from .message import (
    DEAD,
    DELIVERED,
    DONE,
    FAIL,
    RETRY,
    Message,
    NewMessage,
    QueueStats,
    Settlement,
    add_attempt,
    header_names,
    public_view,
)
from .store import QueueFull, QueueUnavailable

GROUP = "fender"
TIMEOUT = 2.0  # seconds Redis may take to answer before the store counts as unavailable
CONNECTIONS = 32  # to Redis, per store
CLAIM_EVERY = 1.0  # seconds between looks for messages of replicas that died
T = TypeVar("T")


def _keys(queue: str) -> dict[str, str]:
    prefix = f"fender:q:{{{queue}}}:"
    names = ("stream", "waiting", "delayed", "dead", "paused", "idem:")
    return {"prefix": prefix, **{name: prefix + name for name in names}}


class RedisStore:
    kind = "redis"
    poll: float | None = 0.1  # other replicas add work: look this often when idle

    def __init__(self, url: str, clock: Clock, consumer: str) -> None:
        self.clock = clock
        self.consumer = consumer
        # Calls wait (up to TIMEOUT) for one of a bounded number of connections.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=CONNECTIONS,
            timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry_on_timeout=False,
        )
        # Typed loosely: redis-py's answers are unions of every reply shape.
        self.redis: Any = aioredis.Redis(connection_pool=pool)
        self.scripts = {name: self.redis.register_script(text) for name, text in lua.SCRIPTS}
        self._groups: set[str] = set()
        self._ready = False
        self._callbacks: list[Callable[[str], None]] = []
        self._claimed_at: dict[str, float] = {}
        self._claim_from: dict[str, bytes | str] = {}  # where the next XAUTOCLAIM scan starts

    @property
    def ready(self) -> bool:
        return self._ready

    def on_work(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    async def _run(self, work: Awaitable[T]) -> T:
        try:
            return await asyncio.ensure_future(work)
        except RedisError as exc:
            if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                self._groups.clear()  # Redis lost it (a flush, a failover): made again
            raise QueueUnavailable(f"redis: {type(exc).__name__}: {exc}"[:300]) from None

    async def open(self) -> None:
        await self._run(self.redis.ping())
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        await self.redis.aclose(close_connection_pool=True)  # the pool is ours: close it too

    async def _group(self, queue: str) -> None:
        if queue in self._groups:
            return
        try:
            await self.redis.xgroup_create(_keys(queue)["stream"], GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(queue)

    # The acceptor's side.
    async def accept(
        self, queue: str, message: NewMessage, *, max_messages: int, dedup_since: float
    ) -> tuple[str, bool]:
        return await self._run(self._accept(queue, message, max_messages, dedup_since))

    async def _accept(
        self, queue: str, m: NewMessage, max_messages: int, dedup_since: float
    ) -> tuple[str, bool]:
        await self._group(queue)
        k = _keys(queue)
        idem = k["idem:"] + f"{len(m.key)}:{m.key}:{m.idem or ''}"
        ttl_ms = max(1, int((m.accepted - dedup_since) * 1000))
        fields: list[Any] = ["queue", queue, "route", m.route, "method", m.method]
        fields += ["target", m.target, "headers", m.headers, "body", m.body or b""]
        fields += ["has_body", int(m.body is not None), "rid", m.request_id, "key", m.key]
        fields += ["accepted", m.accepted, "since", m.accepted, "attempts", 0]
        fields += ["history", "[]", "state", "pending"]
        keys = [k["waiting"], k["stream"], k["prefix"] + "m:" + m.id, idem]
        args = [max_messages, m.id, m.accepted, ttl_ms, int(m.idem is not None), *fields]
        code, found = await self.scripts["accept"](keys=keys, args=args)
        if code == -1:
            raise QueueFull(f"queue {queue} holds {max_messages} messages")
        for callback in self._callbacks:
            callback(queue)
        return found.decode(), code == 0

    # The deliverer's side.
    async def take(self, queue: str, limit: int, now: float, hold_for: float) -> list[Message]:
        return await self._run(self._take(queue, limit, now, hold_for))

    async def _take(self, queue: str, limit: int, now: float, hold_for: float) -> list[Message]:
        await self._group(queue)
        k, r = _keys(queue), self.redis
        await self.scripts["move_due"](
            keys=[k["delayed"], k["stream"]], args=[now, 100, k["prefix"]]
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        if self.clock.monotonic() - self._claimed_at.get(queue, -CLAIM_EVERY) >= CLAIM_EVERY:
            self._claimed_at[queue] = self.clock.monotonic()
            idle_ms = int((hold_for + max(1.0, hold_for * 0.1)) * 1000)  # surely given up
            start = self._claim_from.get(queue, "0-0")  # a scan goes on where the last ended
            claimed = await r.xautoclaim(
                k["stream"], GROUP, self.consumer, idle_ms, start_id=start, count=limit
            )
            self._claim_from[queue] = claimed[0]  # 0-0 again once the whole list was seen
            entries += claimed[1]
        if len(entries) < limit:
            read = await r.xreadgroup(
                GROUP, self.consumer, {k["stream"]: ">"}, count=limit - len(entries)
            )
            for _, items in read or ():
                entries += items
        if not entries:
            return []
        pipe = r.pipeline(transaction=False)
        for _, fields in entries:
            pipe.hgetall(k["prefix"] + "m:" + fields[b"id"].decode())
        rows = await pipe.execute()
        out: list[Message] = []
        for (entry, fields), row in zip(entries, rows, strict=True):
            if row.get(b"state") != b"pending" or row.get(b"entry") != entry:
                await r.xack(k["stream"], GROUP, entry)  # settled, deleted or moved meanwhile
                await r.xdel(k["stream"], entry)
                continue
            out.append(_message(fields[b"id"].decode(), entry, row))
        return out

    def next_due(self, queue: str) -> float | None:
        return None  # other replicas change it: polled

    async def settle(self, queue: str, message: Message, settlement: Settlement) -> None:
        await self._run(self._settle(queue, message, settlement))

    async def _settle(self, queue: str, message: Message, s: Settlement) -> None:
        k, now = _keys(queue), self.clock.wall()
        kind = {DONE: DELIVERED, FAIL: DEAD, RETRY: "retry"}.get(s.kind, "release")
        history = orjson.dumps(add_attempt(message.history, s.attempt))
        attempts = message.attempts + (s.attempt is not None)
        keep_ms = max(1000, int((s.keep_until - now) * 1000))
        keys = [k["stream"], k["prefix"] + "m:" + message.id, k["waiting"], k["delayed"], k["dead"]]
        args = [kind, message.handle, message.id, attempts, history, now, s.due, s.reason]
        await self.scripts["settle"](keys=keys, args=[*args, keep_ms, GROUP])

    async def stats(self, queue: str, now: float) -> QueueStats:
        return await self._run(self._stats(queue, now))

    def snapshot(self, queue: str, now: float) -> QueueStats | None:
        return None  # other replicas change them: read once a second by stats()

    async def _stats(self, queue: str, now: float) -> QueueStats:
        k = _keys(queue)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(k["waiting"])
        pipe.zrange(k["waiting"], 0, 0, withscores=True)
        pipe.zcard(k["dead"])
        pipe.exists(k["paused"])
        depth, oldest, dead, paused = await pipe.execute()
        return QueueStats(
            depth=depth,
            oldest_s=max(0.0, now - oldest[0][1]) if oldest else 0.0,
            dead=dead,
            in_flight=0,
            paused=bool(paused),
        )

    # The operator's side.
    async def view(self, queue: str, message_id: str) -> dict[str, Any] | None:
        return await self._run(self._view(queue, message_id))

    async def _view(self, queue: str, message_id: str) -> dict[str, Any] | None:
        row = await self.redis.hgetall(_keys(queue)["prefix"] + "m:" + message_id)
        return _public(message_id, row) if row else None

    async def dead(self, queue: str, limit: int) -> list[dict[str, Any]]:
        return await self._run(self._dead(queue, limit))

    async def _dead(self, queue: str, limit: int) -> list[dict[str, Any]]:
        k = _keys(queue)
        ids = [i.decode() for i in await self.redis.zrevrange(k["dead"], 0, limit - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for message_id in ids:
            pipe.hgetall(k["prefix"] + "m:" + message_id)
        rows = await pipe.execute() if ids else []
        return [_public(i, row) for i, row in zip(ids, rows, strict=True) if row]

    async def redrive(self, queue: str, message_id: str | None, now: float) -> int:
        return await self._run(self._redrive(queue, message_id, now))

    async def _redrive(self, queue: str, message_id: str | None, now: float) -> int:
        await self._group(queue)
        k, total = _keys(queue), 0
        keys = [k["dead"], k["waiting"], k["stream"]]
        while True:
            count = int(
                await self.scripts["redrive"](
                    keys=keys, args=[now, k["prefix"], message_id or "", 500]
                )
            )
            total += count
            if message_id or count == 0:
                break
        if total:
            for callback in self._callbacks:
                callback(queue)
        return total

    async def delete(self, queue: str, message_id: str) -> bool:
        k = _keys(queue)
        done = await self._run(
            self.scripts["delete"](keys=[k["dead"]], args=[k["prefix"], message_id])
        )
        return bool(done)

    async def set_paused(self, queue: str, paused: bool) -> None:
        key = _keys(queue)["paused"]
        await self._run(self.redis.set(key, 1) if paused else self.redis.delete(key))

    async def purge(self, queue: str, before: float) -> None:
        return None  # delivered messages expire by themselves (PEXPIRE)


def _text(row: dict[bytes, bytes], name: str, default: str = "") -> str:
    value = row.get(name.encode())
    return value.decode("latin-1") if value is not None else default


def _message(message_id: str, entry: bytes, row: dict[bytes, bytes]) -> Message:
    return Message(
        id=message_id,
        handle=entry,
        route=_text(row, "route"),
        method=_text(row, "method"),
        target=_text(row, "target"),
        headers=row.get(b"headers", b""),
        body=row.get(b"body", b"") if row.get(b"has_body") == b"1" else None,
        request_id=_text(row, "rid"),
        key=_text(row, "key"),
        accepted=float(row[b"accepted"]),
        since=float(row[b"since"]),
        attempts=int(row.get(b"attempts", b"0")),
        history=orjson.loads(row.get(b"history", b"[]")),
    )


def _public(message_id: str, row: dict[bytes, bytes]) -> dict[str, Any]:
    settled = _text(row, "settled")
    return public_view(
        {
            "id": message_id,
            "queue": _text(row, "queue"),
            "route": _text(row, "route"),
            "state": _text(row, "state"),
            "method": _text(row, "method"),
            "key": _text(row, "key"),
            "accepted": float(row.get(b"accepted", b"0")),
            "attempts": int(row.get(b"attempts", b"0")),
            "history": orjson.loads(row.get(b"history", b"[]")),
            "settled": float(settled) if settled else None,
            "reason": _text(row, "reason"),
            "body_bytes": len(row.get(b"body", b"")),
            "header_names": header_names(row.get(b"headers")),
        }
    )
