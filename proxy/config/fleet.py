"""The `redis:` section: the Redis that connects the replicas of one fleet.

With it, `scope: global` limits keep their buckets in Redis, upstream cool-downs are
shared, and each replica counts the live ones (proxy/fleet/). The URL's password (and
`password`) are secrets: never echoed in an error, a log line or GET /config.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, StringConstraints, field_validator, model_validator

from .types import Name, Section, unit
from .units import Duration

SCHEMES = ("redis", "rediss")
PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _check_url(value: str) -> str:
    """redis://[user[:password]@]host[:port][/db]; the message never repeats the URL."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("not a Redis URL: write redis://HOST:PORT/DB or rediss://...") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("a Redis URL starts with redis:// (or rediss:// for TLS)")
    if not parts.hostname:
        raise ValueError("the Redis URL names no host")
    if port == 0:
        raise ValueError("the Redis URL's port must be between 1 and 65535")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("the Redis URL's path is a database number, like /0")
    if parts.fragment:
        raise ValueError("the Redis URL has a fragment (#...): leave it out")
    return value


RedisUrl = Annotated[str, AfterValidator(_check_url)]


class Redis(Section):
    """Where the fleet's shared state lives, and how long a request may wait for it."""

    url: RedisUrl
    """`redis://[user:password@]host:port/db`, or `rediss://` for TLS (ACL user names and
    TLS options such as `?ssl_cert_reqs=required` go in the URL). A secret: `${VAR}` and
    `${file:...}` work as everywhere, and the password is never shown."""
    password: str | None = None
    """Instead of a password in the URL (no escaping needed), e.g. `${file:...}` from a
    mounted Secret. A secret too."""
    timeout: Duration = unit("25ms")
    """The longest any request waits for Redis (per decision). Past it, or while Redis is
    unreachable, the local fallback decides: rate / live replicas."""
    prefix: Annotated[str, StringConstraints(pattern=PREFIX_PATTERN)] = "fender"
    """First part of every key and channel, so that several fleets can share one Redis."""
    fleet: Name | None = None
    """Which replicas count as one fleet. None: the policy file's hash (replicas running
    the same file); set it to keep counting across a change of the file."""

    @model_validator(mode="after")
    def _one_password(self) -> Redis:
        if self.password is not None and urlsplit(self.url).password is not None:
            raise ValueError("give the password in the URL or in `password`, not both")
        return self

    @field_validator("timeout")
    @classmethod
    def _sane_timeout(cls, seconds: float) -> float:
        if not 0.001 <= seconds <= 5.0:
            raise ValueError("redis.timeout is between 1ms and 5s")
        return seconds


def redacted_url(url: str) -> str:
    """The URL with its password (if any) replaced: for GET /config and log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:<redacted>@{host}").geturl()


def global_without_redis(data: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """`scope: global` rate limits in a file without `redis:` (read as plain data)."""
    if not isinstance(data, dict) or data.get("redis") is not None:
        return []
    found: list[tuple[tuple[str | int, ...], str]] = []
    for section in ("policies", "upstreams"):
        named = data.get(section)
        for name, body in (named if isinstance(named, dict) else {}).items():
            limit = body.get("rate_limit") if isinstance(body, dict) else None
            if isinstance(limit, dict) and limit.get("scope") == "global":
                found.append(
                    (
                        (section, name, "rate_limit", "scope"),
                        "scope: global keeps the bucket in Redis: add a `redis:` section",
                    )
                )
    return found
