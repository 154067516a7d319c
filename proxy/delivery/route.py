"""A delivery route, as one generation built it: its pipeline (without the fallback: a
fallback's answer is never a delivery) and the header rules of its upstream.

The upstream's `headers.set` values are never stored with a message: they are added to
each delivery from the generation that makes it, so a key rotated by a reload is used
from then on. Its `headers.remove` is applied again too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.model import Route
from ..config.model import Upstream as UpstreamConfig
from ..config.policy import Policy
from ..config.policy import Retry as RetryConfig
from ..http.headers import Headers, line
from ..http.message import Call, Handler
from ..state.classify import Conditions
from .message import Message, unpack_headers

DEFAULT_IDEMPOTENCY_HEADER = "idempotency-key"
_REQUEST_ID = b"x-request-id"


@dataclass(frozen=True, slots=True)
class DeliveryRoute:
    name: str
    queue: str
    handler: Handler
    set_lines: tuple[tuple[bytes, bytes], ...]  # (key, wire line) of `headers.set`
    set_keys: frozenset[bytes]
    dropped: frozenset[bytes]  # `headers.remove` and `headers.set` names: not as stored
    idempotency_header: str  # lower case
    retry_on: Conditions

    @classmethod
    def of(
        cls, route: Route, policy: Policy, upstream: UpstreamConfig, handler: Handler
    ) -> DeliveryRoute:
        assert route.delivery is not None
        rules = upstream.headers
        set_lines = tuple(
            (k.encode("latin-1"), line(k.encode("latin-1"), v.encode("latin-1")))
            for k, v in rules.set.items()
        )
        retry = policy.retry or RetryConfig()
        return cls(
            name=route.name,
            queue=route.delivery.queue,
            handler=handler,
            set_lines=set_lines,
            set_keys=frozenset(key for key, _ in set_lines),
            dropped=frozenset(k.encode("latin-1") for k in (*rules.remove, *rules.set)),
            idempotency_header=retry.idempotency_header or DEFAULT_IDEMPOTENCY_HEADER,
            retry_on=Conditions(retry.on),
        )

    def stored_headers(self, headers: Headers) -> Headers:
        """The request's headers as kept: without `headers.set` values and request id."""
        return headers.without(self.set_keys | {_REQUEST_ID})

    def call(self, message: Message, started: float) -> Call:
        """One delivery of `message`, with this generation's header rules."""
        incoming = unpack_headers(message.headers)
        headers = incoming.without(self.dropped)
        for key, text in self.set_lines:
            headers.add_line(key, text)
        rid = message.request_id
        headers.add_line(_REQUEST_ID, b"x-request-id: " + rid.encode("latin-1"))
        return Call(
            method=message.method,
            target=message.target,
            headers=headers,
            body=message.body,
            route=self.name,
            request_id=rid,
            started=started,
            incoming=incoming,
        )
