"""Header fields as they travel: in wire order, as bytes, looked up without case.

Each field is kept twice: its lower-case name (for look-ups) and its whole line as it
goes on the wire (`Name: value`). Forwarding is then one join of lines, and a value
with obs-text (Latin-1 bytes, RFC 9110 section 5.5) passes through byte for byte. Values
are read as text by decoding Latin-1, which maps each byte to one character and back.
The API is the small part of a multidict that the policies use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import overload


def line(name: bytes, value: bytes) -> bytes:
    return name + b": " + value


class Headers:
    __slots__ = ("keys", "lines")

    def __init__(self, fields: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self.keys: list[bytes] = []  # lower-case names
        self.lines: list[bytes] = []  # b"Name: value", as sent (without its CRLF)
        if fields is not None:
            pairs = fields.items() if isinstance(fields, Mapping) else fields
            for name, value in pairs:
                self.add(name, value)

    @classmethod
    def of(cls, keys: list[bytes], lines: list[bytes]) -> Headers:
        """Adopt lists built by a parser (no copy)."""
        headers = cls.__new__(cls)
        headers.keys = keys
        headers.lines = lines
        return headers

    def copy(self) -> Headers:
        return Headers.of(self.keys.copy(), self.lines.copy())

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower().encode("latin-1") in self.keys

    def raw(self, key: bytes) -> bytes | None:
        """The first value of a lower-case name, as bytes (OWS stripped)."""
        try:
            i = self.keys.index(key)
        except ValueError:
            return None
        return self.lines[i][len(key) + 1 :].strip(b" \t")

    def raw_all(self, key: bytes) -> list[bytes]:
        n = len(key) + 1
        return [self.lines[i][n:].strip(b" \t") for i, k in enumerate(self.keys) if k == key]

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def getall(self, name: str, default: list[str] | None = None) -> list[str]:
        values = [v.decode("latin-1") for v in self.raw_all(name.lower().encode("latin-1"))]
        if not values and default is not None:
            return default
        return values

    def items(self) -> Iterator[tuple[str, str]]:
        for key, text in zip(self.keys, self.lines, strict=True):
            n = len(key)
            yield text[:n].decode("latin-1"), text[n + 1 :].strip(b" \t").decode("latin-1")

    def add(self, name: str, value: str) -> None:
        raw = name.encode("latin-1")
        self.keys.append(raw.lower())
        self.lines.append(line(raw, value.encode("latin-1")))

    def add_line(self, key: bytes, text: bytes) -> None:
        """A line made at load time (`key` lower case, `text` a whole wire line)."""
        self.keys.append(key)
        self.lines.append(text)

    def __setitem__(self, name: str, value: str) -> None:
        self.remove(name.lower().encode("latin-1"))
        self.add(name, value)

    def remove(self, key: bytes) -> None:
        """Drop every field of a lower-case name."""
        keys = self.keys
        while key in keys:
            i = keys.index(key)
            del keys[i]
            del self.lines[i]

    def popall(self, name: str, default: object = None) -> object:
        key = name.lower().encode("latin-1")
        if key not in self.keys:
            return default
        values = self.raw_all(key)
        self.remove(key)
        return values

    def update(self, fields: Mapping[str, str]) -> None:
        for name, value in fields.items():
            self[name] = value

    def without(self, drop: frozenset[bytes] | set[bytes]) -> Headers:
        """A copy without the fields whose lower-case names are in `drop`."""
        keys, lines = self.keys.copy(), self.lines.copy()
        for key in drop.intersection(keys):  # usually a name or two (Host, Connection)
            while key in keys:
                i = keys.index(key)
                del keys[i], lines[i]
        return Headers.of(keys, lines)

    def tokens(self, key: bytes) -> frozenset[bytes]:
        """The comma-separated tokens of every field of a name, lower case (Connection)."""
        out: set[bytes] = set()
        for value in self.raw_all(key):
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token:
                    out.add(token)
        return frozenset(out)

    def encoded(self) -> bytes:
        """The fields as they go on the wire, each line with its CRLF."""
        lines = self.lines
        return b"\r\n".join(lines) + b"\r\n" if lines else b""

    def __repr__(self) -> str:  # names only: values may be credentials
        return f"Headers({[k.decode('latin-1') for k in self.keys]})"


_NAMES = re.compile(rb"\r\n([^:]*):")  # the field names of lines that follow a CRLF


class WireHeaders(Headers):
    """An upstream's header lines as they came (hop-by-hop ones taken out), parsed into
    names and lines only when something looks at them. Most answers are relayed without
    anyone asking: their lines then go out as the one string they arrived in."""

    __slots__ = ("_block",)

    def __init__(self, block: bytes) -> None:  # the lines, CRLF between them, none after
        self._block: bytes | None = block

    def __getattr__(self, name: str) -> list[bytes]:
        if name not in ("keys", "lines") or self._block is None:
            raise AttributeError(name)
        block, self._block = self._block, None
        # llhttp validated every line: each has exactly one name before its first colon.
        self.lines = block.split(b"\r\n") if block else []
        self.keys = _NAMES.findall(b"\r\n" + block.lower()) if block else []
        return self.lines if name == "lines" else self.keys

    def encoded(self) -> bytes:
        block = self._block
        if block is None:
            return super().encoded()
        return block + b"\r\n" if block else b""
