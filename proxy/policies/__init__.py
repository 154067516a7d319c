"""THE order of the policies of a route: decided here, and only here.

DESIGN.md's request path, outermost first:

    Fallback -> Deadline (total) -> RateLimit (route)
      -> Retry -> [per attempt] CircuitBreaker -> Bulkhead -> Quota -> attempt timeout
      -> upstream.send

Why this order: the fallback must see every failure below it, so it is outermost; the
deadline covers queueing, every attempt and every backoff; the breaker, bulkhead and quota
sit inside the retry loop so that each attempt is one sample and spends one token.
The attempt timeout (`min(per_try, deadline)`) is applied by `upstream.send` itself,
which knows the endpoint and so can count the attempt's result right.
"""

from __future__ import annotations

import random

from ..clock import Clock
from ..config_policy import Policy as PolicyConfig
from ..metrics import Metrics
from ..pipeline import Handler, Policy, compose
from ..upstream import Upstream
from .deadline import Deadline
from .retry import Retry


def build_pipeline(
    route: str,
    config: PolicyConfig,
    upstream: Upstream,
    *,
    clock: Clock,
    metrics: Metrics,
    rng: random.Random,
) -> Handler:
    """The handler a route calls: its policies, in THE order, around the upstream's send()."""
    policies: list[Policy] = [Deadline(config.timeouts)]
    if config.retry is not None and config.retry.attempts > 1:
        policies.append(Retry(config.retry, route, clock, metrics, rng))
    return compose(policies, upstream.send)
