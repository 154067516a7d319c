"""The policy file's model: pydantic v2, unknown keys refused, frozen once validated.

Only what Fender implements is accepted: a key that would be silently ignored is an error.
Each default is stated where its field is declared. `load_config()` is the one way in from
a file; it reports every problem with the file, the line and the key path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from .check import reference_problems, warnings
from .faults import FaultSpec
from .fleet import Redis, redacted_url
from .listener import Limits, Listener, Match, Route
from .loader import ConfigError, Document, KeyPath, Problem, read_document
from .policy import Policy
from .queue import Queue, redacted_store
from .types import (
    Address,
    Name,
    Section,
    is_loopback,
    split_address,
    unit,
)
from .units import Duration, Size
from .upstream import HeaderRules, Upstream

__all__ = [
    "Config",
    "ConfigError",
    "HeaderRules",
    "Limits",
    "Listener",
    "Match",
    "Route",
    "Upstream",
    "load_config",
    "split_address",
]


class Control(Section):
    """The control port: metrics, probes and the control API."""

    address: Address = "127.0.0.1:9901"
    """Where metrics, probes and the control API listen."""
    token_file: Path | None = None
    """File holding the bearer token for everything but /metrics, /livez and /readyz.
    Required when the address is not loopback."""
    audit_log: Path | None = None
    """File the control API's mutations are appended to, as a hash chain of JSON lines.
    None: they go to stdout with the rest of the log."""
    limits: Limits = Limits()
    """The same hardening as a listener's; read at start, like the address."""

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Control:
        host, _ = split_address(self.address)
        if self.token_file is None and not is_loopback(host):
            raise ValueError(
                f"control.address {self.address} is not loopback: set control.token_file too"
            )
        if self.token_file is not None:
            try:
                token = self.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise ValueError(f"cannot read token_file {self.token_file}: {reason}") from None
            if not token:
                raise ValueError(f"token_file {self.token_file} is empty")
        return self


class Drain(Section):
    """What happens on SIGTERM or SIGINT."""

    delay: Duration = unit("5s")
    """Keep serving new requests this long after the signal (readiness already 503), so
    that a classic sidecar outlives its app's last calls."""
    timeout: Duration = unit("25s")
    """Then stop accepting, and give in-flight requests this long before aborting them."""


class Reload(Section):
    """Hot reload: the policy file is read again on SIGHUP, POST /reload, and (with
    `watch`) when it changes on disk."""

    watch: bool = True
    interval: Duration = unit("1s")
    """How often the file is looked at."""


class Log(Section):
    access: bool = True
    """One JSON line per request on stdout."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lines below it are dropped (request lines are info); `POST /log-level` changes it."""
    buffer: Size = unit("4MiB")
    """Lines waiting to be written to stdout. A writer thread writes them, so that a slow
    stdout never stalls the proxy; when it is full, lines are dropped and counted in
    fender_log_lines_dropped_total."""


class Config(Section):
    """A Fender policy file."""

    version: Literal[1]
    control: Control = Control()
    drain: Drain = Drain()
    reload: Reload = Reload()
    log: Log = Log()
    listeners: tuple[Listener, ...] = Field(min_length=1)
    upstreams: dict[Name, Upstream] = Field(min_length=1)
    policies: dict[Name, Policy] = Field(default_factory=dict)
    faults: tuple[FaultSpec, ...] = ()
    """Faults to inject (for test environments); the control API adds more at run time."""
    redis: Redis | None = None
    """The Redis that makes the replicas one fleet: `scope: global` limits, shared
    cool-downs, the count of live replicas. None: every replica counts alone."""
    queues: dict[Name, Queue] = Field(default_factory=dict)
    """Durable queues for routes with `delivery:`."""

    _source: str = PrivateAttr(default="<memory>")
    _templates: dict[KeyPath, str] = PrivateAttr(default_factory=dict)

    _warnings: list[Problem] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = reference_problems(self.model_dump())
        if problems:
            raise ReferenceError_(problems)
        return self

    @property
    def warnings(self) -> list[Problem]:
        """What is allowed but almost surely not meant (shadowed routes, ...), each with
        its line when the config came from a file."""
        return self._warnings

    def policy_of(self, route: Route) -> Policy:
        return self.policies[route.policy] if route.policy else DEFAULT_POLICY

    @property
    def source(self) -> str:
        return self._source

    def public_view(self) -> dict[str, Any]:
        """The effective config with every secret replaced (for GET /config and the hash):
        `${...}` values show as written, and no header value is shown at all."""
        data: dict[str, Any] = self.model_dump(mode="json")
        for path in _header_maps(data):
            headers = _get(data, path)
            for header in headers:
                headers[header] = "<redacted>"
        if data.get("redis") is not None:  # the URL's password and `password`
            data["redis"]["url"] = redacted_url(data["redis"]["url"])
            if data["redis"]["password"] is not None:
                data["redis"]["password"] = "<redacted>"
        for path, template in self._templates.items():
            _put(data, path, template)  # as written: `Bearer ${API_KEY}` names no secret
        for queue in data["queues"].values():  # a Redis URL may carry a password
            queue["store"] = redacted_store(queue["store"])
        return data

    @property
    def hash(self) -> str:
        """Short hash of the public view: which version of the policy runs."""
        return hashlib.sha256(
            orjson.dumps(self.public_view(), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()[:12]


DEFAULT_POLICY = Policy()


class ReferenceError_(ValueError):
    """Cross-section problems (dangling names, duplicates), each with its own key path."""

    def __init__(self, problems: list[tuple[KeyPath, str]]) -> None:
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


def _header_maps(data: dict[str, Any]) -> list[KeyPath]:
    """Where header values are in a dumped config: upstreams' `headers.set`, routes'
    `match.headers`, static fallbacks' `headers`."""
    paths: list[KeyPath] = [("upstreams", name, "headers", "set") for name in data["upstreams"]]
    for i, listener in enumerate(data["listeners"]):
        for j, _ in enumerate(listener["routes"]):
            paths.append(("listeners", i, "routes", j, "match", "headers"))
    for name, policy in data["policies"].items():
        for k, step in enumerate((policy["fallback"] or {}).get("chain", ())):
            if step["static"] is not None:
                paths.append(("policies", name, "fallback", "chain", k, "static", "headers"))
    return paths


def _get(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _put(data: Any, path: KeyPath, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate a policy file; raises ConfigError listing every problem."""
    doc = read_document(path, env)
    return validate_document(doc)


def validate_document(doc: Document) -> Config:
    try:
        base_dir = str(Path(doc.source).parent) if doc.source != "<memory>" else None
        config = Config.model_validate(doc.data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(doc.source, _by_line(doc.problems + _problems(doc, exc))) from None
    if doc.problems:
        raise ConfigError(doc.source, doc.problems)
    config._source = doc.source
    config._templates = dict(doc.templates)
    config._warnings = [
        Problem(path, f"warning: {message}", doc.line_of(path))
        for path, message in warnings(config)
    ]
    return config


def _by_line(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda problem: problem.line or 0)


def _problems(doc: Document, exc: ValidationError) -> list[Problem]:
    problems = []
    errors = exc.errors(include_url=False)
    known = {p.path for p in doc.problems}
    # The cross-section checks run on a valid model only; with values wrong elsewhere,
    # run them on the file as written, so that every problem is reported at once.
    if not any(isinstance(e.get("ctx", {}).get("error"), ReferenceError_) for e in errors):
        failed = {tuple(err["loc"]) for err in errors}
        for path, message in reference_problems(doc.data):
            if path not in failed:
                problems.append(Problem(path, message, doc.line_of(path)))
    # A list whose only item failed also reports "too short": the item's error says more.
    failed = {tuple(err["loc"]) for err in errors if err["type"] != "too_short"}
    for err in errors:
        loc: KeyPath = tuple(err["loc"])
        if any(loc[: len(path)] == path for path in known):
            continue  # already reported by the loader (say, an unset variable)
        if err["type"] == "too_short" and any(f[: len(loc)] == loc for f in failed):
            continue
        nested = err.get("ctx", {}).get("error")
        if isinstance(nested, ReferenceError_):
            for path, message in nested.problems:
                problems.append(Problem((*loc, *path), message, doc.line_of((*loc, *path))))
            continue
        problems.append(Problem(loc, _message(doc, loc, err), doc.line_of(loc)))
    return problems


def _message(doc: Document, loc: KeyPath, err: Any) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key (a typo, or a section this version of Fender does not have)"
    if err["type"] == "missing":
        return "required key is missing"
    # Never echo a value that came from the environment or a secret file, nor any header
    # value: both are where credentials live.
    secret = loc in doc.templates or "headers" in loc or loc[:1] == ("redis",)
    value = err.get("input")
    if not secret and isinstance(value, str | int | float | bool) and len(str(value)) < 80:
        message += f" (got {value!r})"
    return message
