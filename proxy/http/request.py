"""What Fender refuses at the edge, before a request is routed (RFC 9110, RFC 9112).

Checked once the head is in: the version, the Host header, the framing headers and the
request target. Every refusal is a 400 (505 for a version Fender does not speak) that
names the rule broken, never the bytes that broke it.
"""

from __future__ import annotations

import re
from typing import Protocol

from .message import Rejected

# A Host is an authority without userinfo: reg-name or IP literal, optional port. No `@`
# (userinfo), `/` (a path), `,` (a list of hosts) and no whitespace.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+;=%-]+)(?::[0-9]*)?")

# Request headers the server itself reads, once the head is parsed.
WATCHED = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


class Head(Protocol):
    keys: list[bytes]
    lines: list[bytes]
    hosts: list[bytes]
    lengths: int
    length: int | None
    encodings: list[bytes]
    expect: bool
    upgrade: bytes | None


def read_watched(head: Head, watched: set[bytes] | frozenset[bytes]) -> None:
    """What the watched headers of a parsed head say (llhttp checked their syntax)."""
    keys, lines = head.keys, head.lines
    if len(watched) == 1 and b"host" in watched and keys.count(b"host") == 1:  # most requests
        head.hosts = [lines[keys.index(b"host")][5:].strip(b" \t")]
        return
    for key in watched:
        n = len(key) + 1
        if keys.count(key) == 1:  # the common case
            values = [lines[keys.index(key)][n:].strip(b" \t")]
        else:
            values = [lines[i][n:].strip(b" \t") for i, k in enumerate(keys) if k == key]
        if key == b"host":
            head.hosts = values
        elif key == b"content-length":
            head.lengths = len(values)
            head.length = int(values[0])
        elif key == b"transfer-encoding":
            head.encodings = values
        elif key == b"expect":
            head.expect = values[0].lower() == b"100-continue"
        else:
            head.upgrade = values[0]


# What a Host may hold: a reg-name or an IP literal and a port. Not `@` (userinfo), `/`
# (a path), `,` (a list of hosts), whitespace or controls.
HOST_CHARS = bytes(
    b
    for b in range(256)
    if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "._~!$&'()*+;=%-:[]")
)


def sane_host(host: bytes) -> bool:
    """The fast check of the common case: one Host of allowed characters only."""
    return bool(host) and not host.translate(None, HOST_CHARS)


def refused(detail: str, status: int = 400) -> Rejected:
    return Rejected("bad_request", detail, status=status)


def check_version(version: str) -> None:
    """HTTP/1.x; a higher minor version is read as 1.1 (RFC 9112 section 2.3)."""
    if not version.startswith("1."):
        raise Rejected(
            "unsupported_version",
            f"HTTP/{version} is not spoken here: send HTTP/1.1",
            status=505,
        )


def check_host(hosts: list[bytes], version: str) -> bytes:
    """The one Host of the request (RFC 9112 section 3.2): required in HTTP/1.1, once."""
    if not hosts:
        if version == "1.0":
            return b""
        raise refused("an HTTP/1.1 request needs a Host header")
    if len(hosts) > 1:
        raise refused("more than one Host header")
    host = hosts[0].strip(b" \t")
    if not _HOST.fullmatch(host):
        raise refused("the Host header is not a host and port")
    return host


def check_framing(lengths: int, encodings: list[bytes]) -> None:
    """A body is framed by Content-Length or by chunked encoding, never both."""
    if encodings and lengths:
        raise refused("both Content-Length and Transfer-Encoding")
    if any(not value.strip(b" \t") for value in encodings):
        raise refused("an empty Transfer-Encoding")
