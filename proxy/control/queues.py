"""The control API of the durable queues: their state, a message's, the dead letters,
and the operator's actions on them (retry, delete, pause, resume), each audited.

A message is shown with its state, attempts and last answer, never its body or header
values (only the body's size and the headers' names). Actions are POST only, like every
action of the control port, and need its token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..delivery.queues import QueueRunner, Queues
from ..delivery.store import QueueUnavailable
from .audit import AuditLog

DEAD_LIMIT, MAX_DEAD_LIMIT = 50, 1000
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def add_queue_routes(app: web.Application, queues: Queues, audit: AuditLog) -> None:
    def on_queue(action: Callable[[web.Request, QueueRunner], Awaitable[web.Response]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            name = request.match_info["queue"]
            runner = queues.accepting(name)
            if runner is None:
                return _json({"error": "no_queue", "queue": name}, 404)
            try:
                return await action(request, runner)
            except QueueUnavailable as exc:
                detail = str(exc)[:300]
                return _json({"error": "queue_unavailable", "queue": name, "detail": detail}, 503)

        return handler

    def audited(what: str, request: web.Request, **fields: Any) -> None:
        audit.record(what, **fields, remote=request.remote or "")

    async def list_queues(request: web.Request) -> web.Response:
        return _json({"queues": queues.status()})

    async def get_message(request: web.Request, runner: QueueRunner) -> web.Response:
        message_id = request.match_info["id"]
        found = await runner.store.view(runner.name, message_id)
        if found is None:
            return _json({"error": "no_message", "queue": runner.name, "id": message_id}, 404)
        return _json(found)

    async def get_dead(request: web.Request, runner: QueueRunner) -> web.Response:
        try:
            limit = int(request.query.get("limit", DEAD_LIMIT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_DEAD_LIMIT:
            detail = f"limit is a number from 1 to {MAX_DEAD_LIMIT}"
            return _json({"error": "bad_limit", "detail": detail}, 400)
        dead = await runner.store.dead(runner.name, limit)
        return _json({"queue": runner.name, "dead": dead, "total": runner.stats.dead})

    async def retry_one(request: web.Request, runner: QueueRunner) -> web.Response:
        message_id = request.match_info["id"]
        count = await runner.store.redrive(runner.name, message_id, queues.clock.wall())
        if not count:
            return _json({"error": "no_dead_letter", "queue": runner.name, "id": message_id}, 404)
        audited("queue.retry", request, queue=runner.name, id=message_id)
        await runner.refresh()
        return _json({"queue": runner.name, "retried": count})

    async def retry_all(request: web.Request, runner: QueueRunner) -> web.Response:
        count = await runner.store.redrive(runner.name, None, queues.clock.wall())
        audited("queue.retry_all", request, queue=runner.name, count=count)
        await runner.refresh()
        return _json({"queue": runner.name, "retried": count})

    async def delete(request: web.Request, runner: QueueRunner) -> web.Response:
        message_id = request.match_info["id"]
        if not await runner.store.delete(runner.name, message_id):
            return _json({"error": "no_dead_letter", "queue": runner.name, "id": message_id}, 404)
        audited("queue.delete", request, queue=runner.name, id=message_id)
        await runner.refresh()
        return _json({"queue": runner.name, "deleted": message_id})

    def pausing(paused: bool) -> Callable[[web.Request, QueueRunner], Awaitable[web.Response]]:
        async def action(request: web.Request, runner: QueueRunner) -> web.Response:
            await runner.pause(paused)
            audited("queue.pause" if paused else "queue.resume", request, queue=runner.name)
            return _json({"queue": runner.name, **runner.view()})

        return action

    router = app.router
    router.add_get("/queues", list_queues, allow_head=False)
    router.add_get("/queues/{queue}/messages/{id}", on_queue(get_message), allow_head=False)
    router.add_get("/queues/{queue}/dead", on_queue(get_dead), allow_head=False)
    router.add_post("/queues/{queue}/dead/retry", on_queue(retry_all))
    router.add_post("/queues/{queue}/dead/{id}/retry", on_queue(retry_one))
    router.add_post("/queues/{queue}/dead/{id}/delete", on_queue(delete))
    router.add_post("/queues/{queue}/pause", on_queue(pausing(True)))
    router.add_post("/queues/{queue}/resume", on_queue(pausing(False)))
