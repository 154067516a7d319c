"""The unit types of the policy file: durations, sizes, ratios and rates.

Each has exactly one canonical string form (`250ms`, `4MiB`, `50%`, `50/s`). A bare
number is refused: `timeout: 5` could mean seconds or milliseconds, so we make the user
say. Values are held as plain numbers (seconds, bytes, fractions, tokens per second) and
printed back in the canonical form, so `GET /config` shows what the user wrote.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SIZE_RE = re.compile(r"^(\d+)(B|KiB|MiB|GiB)$")
_RATIO_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)/(s|m|h)$")


def _need_str(value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"write it as a string with a unit, like {example!r}")
    return value.strip()


def parse_duration(value: Any) -> float:
    """`250ms`, `30s`, `5m`, `1h` -> seconds."""
    m = _DURATION_RE.match(_need_str(value, "250ms"))
    if not m:
        raise ValueError("not a duration: use a number and ms, s, m or h, like '250ms' or '30s'")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    for unit, scale in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= scale and (seconds / scale).is_integer():
            return f"{int(seconds / scale)}{unit}"
    ms = seconds * 1000
    return f"{int(ms)}ms" if float(ms).is_integer() else f"{ms:g}ms"


def parse_size(value: Any) -> int:
    """`512B`, `64KiB`, `4MiB`, `1GiB` -> bytes."""
    m = _SIZE_RE.match(_need_str(value, "4MiB"))
    if not m:
        raise ValueError("not a size: use a whole number and B, KiB, MiB or GiB, like '4MiB'")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def format_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        scale = _SIZE_UNITS[unit]
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def parse_ratio(value: Any) -> float:
    """`50%` -> 0.5; between 0% and 100%."""
    m = _RATIO_RE.match(_need_str(value, "50%"))
    if not m:
        raise ValueError("not a ratio: use a percentage, like '50%'")
    ratio = float(m.group(1)) / 100
    if ratio > 1:
        raise ValueError("a ratio cannot be more than 100%")
    return ratio


def format_ratio(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def parse_rate(value: Any) -> float:
    """`50/s`, `600/m`, `1000/h` -> tokens per second; more than zero."""
    m = _RATE_RE.match(_need_str(value, "50/s"))
    if not m:
        raise ValueError("not a rate: use a number per s, m or h, like '50/s' or '600/m'")
    rate = float(m.group(1)) / _RATE_UNITS[m.group(2)]
    if rate <= 0:
        raise ValueError("a rate must be more than zero")
    return rate


def format_rate(per_second: float) -> str:
    for unit in ("s", "m", "h"):
        count = per_second * _RATE_UNITS[unit]
        if abs(count - round(count)) < 1e-9:
            return f"{round(count)}/{unit}"
    return f"{per_second:g}/s"


def _schema(pattern: re.Pattern[str], example: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern.pattern, "examples": [example]})


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    _schema(_DURATION_RE, "250ms"),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
    _schema(_SIZE_RE, "4MiB"),
]
Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    PlainSerializer(format_ratio, return_type=str),
    _schema(_RATIO_RE, "50%"),
]
Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    PlainSerializer(format_rate, return_type=str),
    _schema(_RATE_RE, "50/s"),
]
