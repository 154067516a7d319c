"""An upstream answer's header lines, made ready to relay: the hop-by-hop and framing
fields taken out, and what they said noted.

The head was parsed and validated by llhttp already; this works on the bytes it was
parsed from, by names at line starts (every line is `Name: value` with no whitespace
before the colon: llhttp's strict mode refused anything else), so an answer costs no
Python call per field. Fender frames the body for the app itself, so `Content-Length`
and `Transfer-Encoding` go; the hop-by-hop fields of RFC 9110 section 7.6.1 go, and so
does every field `Connection` names; an upstream's `x-fender-*` go (those are Fender's
words only). For a 101 to an Upgrade request, `Connection` and `Upgrade` stay.
"""

from __future__ import annotations

import re

from .hygiene import HOP_BY_HOP

Fields = tuple[bytes, int | None, bool, bool, frozenset[bytes]]

_NOTHING: frozenset[bytes] = frozenset()
_RARER = tuple((name, b"\r\n" + name + b":") for name in sorted(HOP_BY_HOP - {b"connection"}))
_RARE = re.compile(rb"\r\n(?:" + b"|".join(re.escape(name) for name, _ in _RARER) + rb"|x-fender-)")
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade", b""})


def answer_fields(block: bytes, upgrade: bool, limits: tuple[int, int]) -> Fields:
    """`block`: the header lines, each after its CRLF (`\r\nName: value...`). Returns
    the lines to relay (without the first CRLF), the Content-Length, whether the body is
    chunked, whether the upstream asked to close, and the names `Connection` lists.
    Raises ValueError when the lines break `limits` (max_header_size, max_headers)."""
    max_size, max_headers = limits
    # (Every header line takes at least 4 bytes: a short head needs no counting.)
    if (len(block) > 4 * max_headers and block.count(b"\r\n") > max_headers) or (
        len(block) > max_size and max(map(len, block.split(b"\r\n"))) > max_size
    ):
        raise ValueError("answer headers over the limits")
    fields = None  # made only for the rarer fields
    length = None
    lower = block.lower()
    # `find`, not `in`: for bytes, `in` first tries its operand as an int, and pays for
    # the exception that fails.
    at = lower.find(b"\r\ncontent-length:")  # at most one: llhttp refuses two
    if at >= 0:
        block, lower, value = _cut(block, lower, at, 17)
        length = int(value)
    at = lower.find(b"\r\nconnection:")
    if at >= 0:
        cut, cut_lower, value = _cut(block, lower, at, 13)
        if value.strip(b" \t") == b"keep-alive" and cut_lower.find(b"\r\nconnection:") < 0:
            block, lower = cut, cut_lower  # the usual one: nothing to note
        else:
            fields = _Fields()
            block, lower = fields.drop(b"connection", block, lower, upgrade)
    if _RARE.search(lower) is not None:  # the other hop-by-hop names, x-fender-*
        fields = fields or _Fields()
        for name, mark in _RARER:
            if lower.find(mark) >= 0:
                block, lower = fields.drop(name, block, lower, upgrade)
        if lower.find(b"\r\nx-fender-") >= 0:
            block, lower = fields.drop(b"x-fender-", block, lower, upgrade, prefix=True)
    if fields is None:
        return block[2:], length, False, False, _NOTHING
    return block[2:], length, fields.chunked, fields.close, fields.listed


def _cut(block: bytes, lower: bytes, at: int, name: int) -> tuple[bytes, bytes, bytes]:
    """The lines without the one at `at` (in both cases), and that line's value (lower
    case; `name`: the length of the CRLF, the name and the colon before it)."""
    stop = lower.find(b"\r\n", at + 2)
    if stop < 0:
        stop = len(lower)
    return block[:at] + block[stop:], lower[:at] + lower[stop:], lower[at + name : stop]


class _Fields:
    """What the dropped fields said, for the rarer cases."""

    __slots__ = ("chunked", "close", "listed")

    def __init__(self) -> None:
        self.chunked = self.close = False
        self.listed = _NOTHING

    def drop(
        self, name: bytes, block: bytes, lower: bytes, upgrade: bool, *, prefix: bool = False
    ) -> tuple[bytes, bytes]:
        """Take the lines of one field out (or, for a prefix, of every field it begins)."""
        mark = b"\r\n" + name if prefix else b"\r\n" + name + b":"
        at = lower.find(mark)
        while at >= 0:
            stop = lower.find(b"\r\n", at + 2)
            stop = len(lower) if stop < 0 else stop
            value = lower[at + len(mark) : stop].strip(b" \t")
            keep = False
            if name == b"transfer-encoding":  # framed by chunks only if chunked comes last
                self.chunked = value.rsplit(b",", 1)[-1].strip(b" \t") == b"chunked"
            elif name == b"connection" and value != b"keep-alive":
                tokens = frozenset(t.strip(b" \t") for t in value.split(b","))
                self.close = self.close or b"close" in tokens
                self.listed |= tokens - _CONNECTION_OPTIONS
                keep = b"upgrade" in tokens and upgrade  # kept for the 101
            elif name == b"upgrade":
                keep = upgrade
            if keep:
                at = lower.find(mark, stop)
                continue
            block, lower = block[:at] + block[stop:], lower[:at] + lower[stop:]
            at = lower.find(mark, at)
        return block, lower
