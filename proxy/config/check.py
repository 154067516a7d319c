"""Checks across sections of a policy file: what one key says about another.

Problems (the file is refused): duplicate names and addresses, names that lead nowhere
(a delivery route's queue included), and an endpoint that is one of Fender's own
listeners (every request would come back in, again and again). They read the file as
plain data, so that they can run even when some values are wrong, and every problem is
reported at once.

Warnings (the file is used; `fender check` prints them): a route that an earlier route
of its listener shadows (it is never matched), a `per_try` longer than `first_byte`, and
a queue no route delivers through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .fleet import global_without_redis
from .loader import KeyPath
from .queue import queue_problems
from .types import is_loopback, split_address
from .units import format_duration

if TYPE_CHECKING:
    from .listener import Match
    from .model import Config

Found = list[tuple[KeyPath, str]]
_ANY = frozenset({"0.0.0.0", "::", ""})  # a socket bound to every address
_DEFAULT_PORT = {"http": 80, "https": 443}


def _items(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """The mappings of a list, with their index (anything else in it is skipped)."""
    for i, item in enumerate(value if isinstance(value, list | tuple) else ()):
        if isinstance(item, dict):
            yield i, item


def _named(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def reference_problems(data: Any) -> Found:
    """Duplicates, dangling names and self-loops in a policy file given as plain data."""
    data, problems = _named(data), []
    upstreams, policies = _named(data.get("upstreams")), _named(data.get("policies"))
    control = _named(data.get("control")).get("address", "127.0.0.1:9901")
    addresses: dict[object, KeyPath] = {control: ("control", "address")}
    listener_names: set[object] = set()
    route_names: set[object] = set()
    for i, listener in _items(data.get("listeners")):
        where: KeyPath = ("listeners", i)
        name, address = listener.get("name"), listener.get("address")
        if isinstance(name, str) and name in listener_names:
            problems.append(((*where, "name"), f"listener name {name!r} is used twice"))
        listener_names.add(name if isinstance(name, str) else None)
        if isinstance(address, str) and not address.endswith(":0"):
            if address in addresses:
                other = ".".join(map(str, addresses[address]))
                problems.append(((*where, "address"), f"address also used by {other}"))
            addresses[address] = where
        for j, route in _items(listener.get("routes")):
            at: KeyPath = (*where, "routes", j)
            route_name, policy = route.get("name"), route.get("policy")
            upstream = route.get("upstream")
            if isinstance(route_name, str) and route_name in route_names:
                problems.append(((*at, "name"), f"route name {route_name!r} is used twice"))
            route_names.add(route_name if isinstance(route_name, str) else None)
            if isinstance(policy, str) and policy not in policies:
                known = ", ".join(sorted(policies)) or "none"
                problems.append(((*at, "policy"), f"no policy named {policy!r} (known: {known})"))
            if isinstance(upstream, str) and upstream not in upstreams:
                known = ", ".join(sorted(upstreams)) or "none"
                problems.append(
                    ((*at, "upstream"), f"no upstream named {upstream!r} (known: {known})")
                )
            delivery = _named(route.get("delivery"))
            if delivery:
                problems += queue_problems(data, delivery.get("queue"), (*at, "delivery", "queue"))
                if route.get("upgrade"):
                    message = "a delivery route cannot also take Upgrade requests"
                    problems.append(((*at, "upgrade"), message))
    for k, fault in _items(data.get("faults")):
        hit_route, hit_upstream = fault.get("route"), fault.get("upstream")
        if isinstance(hit_route, str) and hit_route not in route_names:
            problems.append((("faults", k, "route"), f"no route named {hit_route!r}"))
        if isinstance(hit_upstream, str) and hit_upstream not in upstreams:
            problems.append((("faults", k, "upstream"), f"no upstream named {hit_upstream!r}"))
    for name, policy in policies.items():
        fallback = _named(_named(policy).get("fallback"))
        for k, step in _items(fallback.get("chain")):
            upstream = step.get("upstream")
            if isinstance(upstream, str) and upstream not in upstreams:
                at = ("policies", name, "fallback", "chain", k, "upstream")
                problems.append((at, f"no upstream named {upstream!r}"))
    problems += _self_loops(data, upstreams)
    problems += global_without_redis(data)
    return problems


def _self_loops(data: dict[str, Any], upstreams: dict[str, Any]) -> Found:
    listeners = []
    for _, listener in _items(data.get("listeners")):
        try:
            host, port = split_address(str(listener.get("address")))
        except ValueError:
            continue
        if port:  # port 0: the kernel picks, never one an endpoint names
            listeners.append((listener.get("name"), listener["address"], host, port))
    problems: Found = []
    for name, upstream in upstreams.items():
        for i, endpoint in enumerate(_named(upstream).get("endpoints") or ()):
            target = _host_port(endpoint)
            for own, address, host, port in listeners:
                if target is not None and target[1] == port and _reaches(target[0], host):
                    problems.append(
                        (
                            ("upstreams", name, "endpoints", i),
                            f"this is listener {own}'s own address ({address}): every "
                            "request would loop back into Fender",
                        )
                    )
    return problems


def _host_port(endpoint: Any) -> tuple[str, int] | None:
    """`https://api.example.com:8443/v1` -> ('api.example.com', 8443)."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        return None
    scheme, _, rest = endpoint.partition("://")
    authority = rest.split("/", 1)[0]
    host, port = authority, ""
    if not authority.endswith("]"):  # `[::1]` alone has no port
        host, _, port = authority.rpartition(":")
    if not host or not port.isdigit():
        host, port = authority, str(_DEFAULT_PORT.get(scheme.lower(), 0))
    return host.strip("[]").lower(), int(port)


def _reaches(endpoint: str, listener: str) -> bool:
    """Would a connection to `endpoint` on this machine reach a socket bound to
    `listener` (the same port)? Connecting to 0.0.0.0 or :: reaches the loopback."""
    listener = listener.lower()
    if endpoint == listener:
        return True
    local = endpoint in _ANY or endpoint == "localhost"
    if listener in _ANY:  # every address of the machine: the loopback ones included
        return local or is_loopback(endpoint)
    if listener == "localhost":
        return local or is_loopback(endpoint)
    return is_loopback(listener) and local


def warnings(config: Config) -> Found:
    """What is allowed but almost surely not meant."""
    found: Found = []
    for i, listener in enumerate(config.listeners):
        for k, later in enumerate(listener.routes):
            for j, earlier in enumerate(listener.routes[:k]):
                if _shadows(earlier.match, later.match):
                    found.append(
                        (
                            ("listeners", i, "routes", k),
                            f"never matched: route {earlier.name!r} (routes[{j}]) before it "
                            "takes every request it would",
                        )
                    )
                    break
    used = {r.delivery.queue for lst in config.listeners for r in lst.routes if r.delivery}
    for name in config.queues:
        if name not in used:
            found.append((("queues", name), "no route delivers through this queue"))
    for name, policy in config.policies.items():
        per_try, first_byte = policy.timeouts.per_try, policy.timeouts.first_byte
        if per_try is not None and first_byte is not None and per_try > first_byte:
            found.append(
                (
                    ("policies", name, "timeouts", "per_try"),
                    f"per_try ({format_duration(per_try)}) is longer than first_byte "
                    f"({format_duration(first_byte)}): attempts are cut at first_byte anyway",
                )
            )
    return found


def _shadows(earlier: Match, later: Match) -> bool:
    """Does every request `later` matches also match `earlier`?"""
    if earlier.methods is not None and not (
        later.methods is not None and set(later.methods) <= set(earlier.methods)
    ):
        return False
    if earlier.host is not None:
        host, pattern = (later.host or "").lower(), earlier.host.lower()
        wildcard = pattern.startswith("*.") and host.endswith(pattern[1:])
        if later.host is None or not (host == pattern or wildcard):
            return False
    if any(later.headers.get(name) != value for name, value in earlier.headers.items()):
        return False
    path = later.path if later.path is not None else later.path_prefix
    if earlier.path is not None:
        return later.path == earlier.path
    if earlier.path_prefix is not None:
        return path is not None and path.startswith(earlier.path_prefix)
    return True
