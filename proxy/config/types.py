"""Field types and the base of every section of the policy file.

Every section refuses unknown keys and is frozen once validated; its attribute docstrings
become the descriptions of `fender schema`, which editors show.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

# Names end up as metric labels and in headers: keep them short and plain.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
HeaderName = Annotated[
    str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"), AfterValidator(str.lower)
]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"]

_ADDRESS_RE = re.compile(
    r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})$"
)
_ENDPOINT_RE = re.compile(
    r"^(?P<scheme>https?)://(?P<authority>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?"
    r"(?P<path>/[^?#]*)?$"
)


def split_address(address: str) -> tuple[str, int]:
    """`127.0.0.1:15000` -> ('127.0.0.1', 15000); `[::1]:80` -> ('::1', 80)."""
    m = _ADDRESS_RE.match(address)
    if not m:
        raise ValueError("not an address: write host:port, like '127.0.0.1:15000'")
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError("the port must be between 0 and 65535")
    return m.group("v6") or m.group("host"), port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(value: str) -> str:
    split_address(value)
    return value


def _check_endpoint(value: str) -> str:
    m = _ENDPOINT_RE.match(value)
    if not m:
        raise ValueError(
            "not an endpoint: write http:// or https://, a host, an optional port and path, "
            "no user info, query or fragment, like 'https://api.example.com'"
        )
    port = m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError("the port must be between 1 and 65535")
    return value.rstrip("/")


def endpoint_labels(endpoints: tuple[str, ...]) -> list[str]:
    """What names each endpoint in metrics, logs, errors and /status: scheme://authority.
    Never its path, which can hold a credential (webhook URLs: `/services/T0/B0/secret`,
    `/bot<token>`). Endpoints that differ only by path are told apart by `#2`, `#3`."""
    labels: list[str] = []
    seen: dict[str, int] = {}
    for url in endpoints:
        scheme, _, rest = url.partition("://")
        base = f"{scheme}://{rest.split('/', 1)[0]}"
        seen[base] = n = seen.get(base, 0) + 1
        labels.append(base if n == 1 else f"{base}#{n}")
    return labels


def _check_header_value(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        # A line break would end the header early on the wire (a value from an env var or
        # a secret mounted from a file often ends in a newline).
        raise ValueError("a header value cannot hold a line break or NUL (a trailing newline?)")
    return value


HeaderValue = Annotated[str, AfterValidator(_check_header_value)]


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("a path starts with '/'")
    return value


Address = Annotated[str, AfterValidator(_check_address)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
PathText = Annotated[str, AfterValidator(_check_path)]


class Section(BaseModel):
    # Attribute docstrings become the JSON Schema's descriptions, shown by editors.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def unit(text: str) -> Any:
    """A default written as users write it, so the schema shows `5s` and not 5.0."""
    return Field(default=text, validate_default=True)


# What an attempt can end in besides a status: `connect_error` (nothing was sent),
# `tls_error`, `reset` (the connection closed before response headers), `timeout`,
# `bad_response` (what came back is not HTTP, or breaks the upstream's header limits).
REASONS = ("connect_error", "tls_error", "reset", "timeout", "bad_response")
_STATUS_RE = re.compile(r"^(?:[1-5]\d\d|[1-5]xx)$")


def _condition(value: Any) -> str:
    text = str(value).strip().lower() if isinstance(value, int | str) else ""
    if text in REASONS or _STATUS_RE.match(text):
        return text
    raise ValueError(
        f"not a condition: use {', '.join(REASONS)}, a status like 503 or a class like 5xx"
    )


Condition = Annotated[
    str,
    BeforeValidator(_condition),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": rf"^({'|'.join(REASONS)}|[1-5]\d\d|[1-5]xx)$"},
            ]
        }
    ),
]
