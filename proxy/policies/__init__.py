"""THE order of the policies of a route: decided here, and only here.

DESIGN.md's request path, outermost first:

    Fallback -> Deadline (total) -> RateLimit (route)
      -> Retry -> [per attempt] CircuitBreaker -> Bulkhead -> Quota -> attempt timeout
      -> upstream.send

Why this order: the fallback must see every failure below it, so it is outermost; the
deadline covers queueing, every attempt and every backoff; the breaker, bulkhead and quota
sit inside the retry loop so that each attempt is one sample and spends one token.
No policy is implemented yet: a route is its upstream's `send`.
"""

from __future__ import annotations

from ..pipeline import Handler, Policy, compose
from ..upstream import Upstream


def build_pipeline(upstream: Upstream) -> Handler:
    """The handler a route calls: its policies around the upstream's send()."""
    policies: list[Policy] = []
    return compose(policies, upstream.send)
