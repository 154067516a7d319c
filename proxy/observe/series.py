"""Which labelled series a config keeps: those of its routes, upstreams, endpoints, queues.

A reload that removes an upstream, a route or an endpoint removes every series labelled
with it (`fender_circuit_state{upstream="gone"}` would otherwise keep an alert firing
until a restart). A reload that fails removes what its build had already exported, so
the running config's series are all that is left. Label values Fender makes itself
(`_unmatched`) are always kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config.types import endpoint_labels

if TYPE_CHECKING:
    from ..config.model import Config

SCOPED = frozenset({"route", "upstream", "endpoint", "scope", "queue"})  # labels naming config
NO_ROUTE = "_unmatched"  # route and upstream label of requests no route took


@dataclass(frozen=True)
class Kept:
    routes: frozenset[str]
    upstreams: frozenset[str]
    endpoints: frozenset[tuple[str, str]]  # (upstream, endpoint)
    queues: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config: Config) -> Kept:
        routes = {route.name for listener in config.listeners for route in listener.routes}
        return cls(
            routes=frozenset({*routes, NO_ROUTE}),
            upstreams=frozenset({*config.upstreams, NO_ROUTE}),
            endpoints=frozenset(
                (name, label)
                for name, upstream in config.upstreams.items()
                for label in endpoint_labels(upstream.endpoints)
            ),
            queues=frozenset(config.queues),
        )

    def keeps(self, labels: Mapping[str, str]) -> bool:
        """Does a series with these labels belong to the config?"""
        route, upstream = labels.get("route"), labels.get("upstream")
        if route is not None and route not in self.routes:
            return False
        if upstream is not None and upstream not in self.upstreams:
            return False
        queue = labels.get("queue")
        if queue is not None and queue not in self.queues:
            return False
        endpoint = labels.get("endpoint")
        if endpoint is not None and (upstream or "", endpoint) not in self.endpoints:
            return False
        kind, _, name = labels.get("scope", "").partition(":")  # route:NAME, upstream:NAME
        if kind == "route":
            return name in self.routes
        return kind != "upstream" or name in self.upstreams


def gone(metric: Any, names: Sequence[str], kept: Kept) -> Iterator[tuple[str, ...]]:
    """The label values (in `names`' order) of the series of `metric` that `kept` drops."""
    seen: set[tuple[str, ...]] = set()
    for family in metric.collect():
        for sample in family.samples:
            values = tuple(sample.labels[name] for name in names)
            if values not in seen:
                seen.add(values)
                if not kept.keeps(dict(zip(names, values, strict=True))):
                    yield values
