"""The audit log: every mutation made through the control API, as a chain of JSON lines.

Each line carries the SHA-256 of the audit line before it (`prev`; the first one carries
64 zeros), so an edited, removed, reordered or inserted line breaks the chain at that
point. `fender audit verify FILE` walks the chain; lines of other events in the file (the
audit lines may share stdout with the rest of the log) are skipped.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

GENESIS = "0" * 64


def digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    def __init__(self, write: Callable[[bytes], None], last_line: bytes | None = None) -> None:
        self._write = write
        self._prev = digest(last_line) if last_line else GENESIS

    @classmethod
    def to_file(cls, path: Path) -> AuditLog:
        """Append to `path`, continuing the chain of what it already holds. Only a regular
        file is read back: a pipe or a terminal (`/dev/stdout` in a container) would block."""
        last = None
        if path.is_file():
            lines = [line for line in path.read_bytes().splitlines() if _is_audit(line)]
            last = lines[-1] if lines else None

        def write(line: bytes) -> None:
            with path.open("ab") as out:
                out.write(line)

        return cls(write, last)

    def record(self, action: str, **fields: Any) -> None:
        entry = {
            "time": datetime.datetime.now(datetime.UTC),
            "level": "info",
            "event": "audit",
            "action": action,
            **fields,
            "prev": self._prev,
        }
        line = orjson.dumps(entry, default=str)
        self._write(line + b"\n")
        self._prev = digest(line)


def _is_audit(line: bytes) -> bool:
    try:
        return bool(orjson.loads(line).get("event") == "audit")
    except (orjson.JSONDecodeError, AttributeError):
        return False


def verify(path: Path) -> tuple[int, tuple[int, int] | None]:
    """(audit lines checked, None) for an intact chain; else the break: (the line number
    of the previous audit line (0: none), the line number that does not follow it)."""
    prev, count, previous = GENESIS, 0, 0
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            if b'"event":"audit"' in line:
                return count, (previous, number)  # an audit line that no longer parses
            continue
        if not isinstance(entry, dict) or entry.get("event") != "audit":
            continue
        if entry.get("prev") != prev:
            return count, (previous, number)
        prev, count, previous = digest(line), count + 1, number
    return count, None
