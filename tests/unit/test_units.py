"""Durations, sizes, ratios and rates: one canonical string form each."""

from __future__ import annotations

import pytest

from proxy.config.units import (
    format_duration,
    format_rate,
    format_ratio,
    format_size,
    parse_duration,
    parse_rate,
    parse_ratio,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("0s", 0.0), ("30s", 30.0), ("1.5s", 1.5), ("5m", 300.0), ("2h", 7200.0)],
)
def test_duration_parses_and_prints_back(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (30.0, "30s"), (90.0, "90s"), (300.0, "5m"), (3600.0, "1h")],
)
def test_duration_canonical_form(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [5, 5.0, "5", "5 s", "5sec", "-1s", "1d", "", None, True])
def test_duration_refuses_anything_but_the_string_form(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"), [("512B", 512), ("64KiB", 65536), ("4MiB", 4 << 20), ("1GiB", 1 << 30)]
)
def test_size_parses_and_prints_back(text, size):
    assert parse_size(text) == size
    assert format_size(size) == text


@pytest.mark.parametrize("bad", [4096, "4MB", "4 MiB", "1.5MiB", "4mib", "x"])
def test_size_refuses_other_forms(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "ratio"), [("50%", 0.5), ("0%", 0.0), ("100%", 1.0), ("12.5%", 0.125)]
)
def test_ratio_parses_and_prints_back(text, ratio):
    assert parse_ratio(text) == ratio
    assert format_ratio(ratio) == text


@pytest.mark.parametrize("bad", [0.5, "0.5", "50", "101%", "-5%"])
def test_ratio_refuses_other_forms(bad):
    with pytest.raises(ValueError):
        parse_ratio(bad)


@pytest.mark.parametrize(
    ("text", "per_second", "canonical"),
    [
        ("50/s", 50.0, "50/s"),
        ("600/m", 10.0, "10/s"),
        ("30/m", 0.5, "30/m"),
        ("1/h", 1 / 3600, "1/h"),
    ],
)
def test_rate_parses_and_prints_back(text, per_second, canonical):
    assert parse_rate(text) == pytest.approx(per_second)
    assert format_rate(parse_rate(text)) == canonical


@pytest.mark.parametrize("bad", [50, "50", "50/d", "0/s", "50 /s", "fast"])
def test_rate_refuses_other_forms(bad):
    with pytest.raises(ValueError):
        parse_rate(bad)
