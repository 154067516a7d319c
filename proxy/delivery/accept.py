"""The handler of a route with `delivery:`: keep the request durably, then answer 202.

What is kept: the method, the target after the route's rewrite, the headers after
hygiene (without the upstream's `headers.set` values, added at delivery time), the body
(up to the queue's `max_body`), the request id and the fairness key's value. The app's
idempotency header (the route policy's `retry.idempotency_header`) deduplicates: the
same value again within `max_age` answers the first id and keeps nothing new. Without
one, the delivery id becomes the `Idempotency-Key` of every attempt.

The 202 (JSON `{"id", "queue"}`, and `x-fender-delivery-id`) goes out only once the
store said the message is durable; a store that cannot take it answers 503
`queue_full` or `queue_unavailable`, never 202.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from ..config.queue import Queue as QueueConfig
from ..http.headers import Headers, line
from ..http.message import Call, Rejected, Reply
from ..http.stream import BodyStream
from ..observe.metrics import Metrics
from ..state.clock import Clock
from .message import NewMessage, new_id, pack_headers
from .route import DeliveryRoute
from .store import QueueFull, QueueUnavailable, Store

MAX_KEY = 256  # characters of a fairness key's value kept


class Accepting(Protocol):
    """A queue as the acceptor sees it."""

    name: str
    config: QueueConfig
    store: Store


class QueueLookup(Protocol):
    def accepting(self, name: str) -> Accepting | None: ...


class Acceptor:
    def __init__(
        self, route: DeliveryRoute, queues: QueueLookup, clock: Clock, metrics: Metrics
    ) -> None:
        self.route = route
        self.queues = queues
        self.clock = clock
        self.metrics = metrics
        self.idem_key = route.idempotency_header.encode("latin-1")

    async def __call__(self, call: Call) -> Reply:
        route = self.route
        queue = self.queues.accepting(route.queue)
        if queue is None:
            raise Rejected(
                "queue_unavailable", f"queue {route.queue} is not running", retry_after=1
            )
        config, name = queue.config, queue.name
        body = await self._body(call, config.max_body, name)
        incoming = call.incoming if call.incoming is not None else call.headers
        # A blank key is no key: deduplicating on it would answer every later message
        # with the id of the first and keep nothing.
        idem = (incoming.get(route.idempotency_header) or "").strip() or None
        header = config.header
        key = (incoming.get(header) or "")[:MAX_KEY] if header is not None else ""
        now = self.clock.wall()
        message_id = new_id(now)
        headers = route.stored_headers(call.headers)
        if idem is None:  # the delivery id is the key, the same on every attempt
            headers.remove(self.idem_key)
            headers.add_line(self.idem_key, line(self.idem_key, message_id.encode()))
        message = NewMessage(
            id=message_id,
            route=route.name,
            method=call.method,
            target=call.target,
            headers=pack_headers(headers),
            body=body,
            request_id=call.request_id,
            key=key,
            idem=idem,
            accepted=now,
        )
        try:
            message_id, duplicate = await queue.store.accept(
                name, message, max_messages=config.max_messages, dedup_since=now - config.max_age
            )
        except QueueFull:
            self.metrics.count_queue_accept(name, "full")
            raise Rejected("queue_full", f"queue {name} is full", retry_after=5) from None
        except QueueUnavailable as exc:
            self.metrics.count_queue_accept(name, "unavailable")
            detail = f"queue {name} cannot keep the request now: {str(exc)[:200]}"
            raise Rejected("queue_unavailable", detail, retry_after=1) from None
        self.metrics.count_queue_accept(name, "duplicate" if duplicate else "accepted")
        answer = Headers()
        answer.add_line(b"content-type", b"content-type: application/json")
        answer.add_line(b"x-fender-delivery-id", b"x-fender-delivery-id: " + message_id.encode())
        return Reply(202, answer, orjson.dumps({"id": message_id, "queue": name}))

    async def _body(self, call: Call, limit: int, queue: str) -> bytes | None:
        body = call.body
        if body is None or isinstance(body, bytes):
            if body is not None and len(body) > limit:
                self._too_large(queue, limit)
            return body
        assert isinstance(body, BodyStream)
        if body.length is not None and body.length > limit:
            self._too_large(queue, limit)
        whole = await body.read(limit)
        if whole is not None:
            return whole
        if body.failed == "body_timeout":
            detail = "the app sent no request body for longer than body_timeout"
            raise Rejected("body_timeout", detail, status=408)
        if body.failed:
            raise Rejected("bad_request", "the request body broke off", status=400)
        self._too_large(queue, limit)
        return None  # not reached

    def _too_large(self, queue: str, limit: int) -> None:
        self.metrics.count_queue_accept(queue, "too_large")
        raise Rejected(
            "body_too_large", f"queue {queue} takes bodies up to {limit} bytes", status=413
        )
