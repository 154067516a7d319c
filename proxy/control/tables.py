"""GET /status as text tables: what `fender status` prints (terminal.py fetches it).

Columns are fitted into the terminal's width (long cells cut with "…"); colour only when
asked (a terminal), applied after the padding so that widths stay right.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

Cell = tuple[str, str]  # text, colour name ("" for none)
Paint = Callable[[str, str], str]
COLOURS = {"red": "31", "green": "32", "yellow": "33", "magenta": "35", "dim": "2", "bold": "1"}
STATE_COLOUR = {"closed": "green", "half_open": "yellow", "open": "red"}
LEVEL_COLOUR = {"full": "green", "degraded": "yellow", "limited": "red", "emergency": "red"}
OUTCOMES = ("ok", "retried", "fallback", "rejected", "failed", "cancelled")
EVENTS_SHOWN = 10
# Burn rates of the objectives: 1x spends the budget exactly over the SLO's window.
BURNS = ("avail 5m", "avail 1h", "lat 5m", "lat 1h")


def _burn(value: float | None) -> Cell:
    if value is None:
        return "-", "dim"
    colour = "red" if value >= 6 else "yellow" if value >= 1 else "green"
    return f"{value:.1f}x", colour


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms" if value < 100 else f"{value:.0f}ms"


def _s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def route_rows(routes: dict[str, Any]) -> list[list[Cell]]:
    rows = []
    for name, r in routes.items():
        recent = r["last_minute"]
        burns: list[Cell] = []
        for slo in ("availability", "latency"):
            objective = (r.get("slo") or {}).get(slo)
            for window in ("5m", "1h"):
                burns.append(
                    _burn(objective[f"last_{window}"]["burn_rate"]) if objective else ("", "")
                )
        rate = r["rate_per_s"]
        good = r["good_ratio"]
        rows.append(
            [
                (name, "bold"),
                ("-" if rate is None else f"{rate:.1f}", ""),
                (_pct(good), "red" if good is not None and good < 0.99 else ""),
                (_ms(r["latency_ms"]["p50"]), ""),
                (_ms(r["latency_ms"]["p99"]), ""),
                *(
                    (str(recent.get(k, 0)), "red" if k == "failed" and recent.get(k) else "")
                    for k in OUTCOMES
                ),
                *burns,
            ]
        )
    return rows


def upstream_rows(upstreams: dict[str, Any]) -> list[list[Cell]]:
    rows = []
    for name, u in upstreams.items():
        breaker, bulkhead, quota = u["breaker"], u["bulkhead"], u["quota"]
        state = breaker["state"] if breaker else "-"
        left = _s(breaker["open_for_s"]) if breaker and breaker["open_for_s"] else ""
        override = breaker and breaker["override"]
        held = f"{override['state']} {_s(override['expires_in_s'])}" if override else ""
        out = [e["endpoint"] for e in u["endpoints"] if not e["usable"]]
        endpoints = f"{len(u['endpoints']) - len(out)}/{len(u['endpoints'])} up"
        rows.append(
            [
                (name, "bold"),
                (state.upper(), STATE_COLOUR.get(state, "dim")),
                (left, "red" if left else ""),
                (held, "yellow" if held else ""),
                (f"{bulkhead['in_flight']}/{bulkhead['max_concurrent']}" if bulkhead else "-", ""),
                (f"{bulkhead['queued']}/{bulkhead['max_queued']}" if bulkhead else "-", ""),
                ("-" if not quota or quota["tokens"] is None else str(quota["tokens"]), ""),
                (_s(quota["paused_for_s"]) if quota and quota["paused_for_s"] else "", "yellow"),
                (endpoints + (f" (out: {', '.join(out)})" if out else ""), "red" if out else ""),
            ]
        )
    return rows


def override_rows(data: dict[str, Any]) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    for fault in data["faults"]:
        target = (
            f"route {fault['route']}" if fault.get("route") else f"upstream {fault.get('upstream')}"
        )
        does = ", ".join(
            w
            for w in (
                f"delay {fault['delay']}" if fault.get("delay") else "",
                f"abort {fault['abort']}" if fault.get("abort") else "",
                "reset" if fault.get("reset") else "",
            )
            if w
        )
        left = fault["expires_in_s"]
        rows.append(
            [
                (f"fault {fault['id']}", "yellow"),
                (target, ""),
                (f"{does} on {fault['percentage']}", ""),
                ("from the policy file" if left is None else _s(left), ""),
            ]
        )
    for name, u in data["upstreams"].items():
        override = u["breaker"] and u["breaker"]["override"]
        if override:
            rows.append(
                [
                    ("breaker", "yellow"),
                    (f"upstream {name}", ""),
                    (f"held {override['state']}", ""),
                    (_s(override["expires_in_s"]), ""),
                ]
            )
    level = data["degradation"]["override"]
    if level:
        rows.append(
            [
                ("degradation", "yellow"),
                ("everything", ""),
                (f"set to {level['level']}", ""),
                (_s(level["expires_in_s"]), ""),
            ]
        )
    return rows


def render(data: dict[str, Any], width: int = 120, colour: bool = False) -> str:
    level = data["degradation"]["level"]
    how = "set by hand" if data["degradation"]["override"] else "derived"
    flags = [
        w
        for w, on in (
            ("DRAINING", data.get("draining")),
            ("NOT READY", not data.get("ready", True)),
        )
        if on
    ]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("time", time.time())))
    head = [
        ("Fender", "bold"),
        (f"policy {data['config_hash']}", "dim"),
        (f"degradation {level.upper()} ({how})", LEVEL_COLOUR.get(level, "")),
        *((f, "red") for f in flags),
        (stamp, "dim"),
    ]
    paint = _painter(colour)
    lines = ["  ".join(paint(t, c) for t, c in head), ""]
    lines += table(
        "ROUTES",
        ["route", "req/s", "good", "p50", "p99", *OUTCOMES, *BURNS],
        route_rows(data["routes"]),
        width,
        paint,
    )
    lines += table(
        "UPSTREAMS",
        [
            "upstream",
            "circuit",
            "left open",
            "override",
            "in flight",
            "queued",
            "tokens",
            "cool-down",
            "endpoints",
        ],
        upstream_rows(data["upstreams"]),
        width,
        paint,
    )
    overrides = override_rows(data)
    if overrides:
        lines += table(
            "FAULTS AND OVERRIDES", ["what", "on", "does", "time left"], overrides, width, paint
        )
    for name in data.get("sections", []):
        rows = data.get(name) or {}
        keys = list(dict.fromkeys(k for row in rows.values() for k in row))
        body = [
            [(key, "bold"), *((_text(row.get(k)), "") for k in keys)] for key, row in rows.items()
        ]
        lines += table(name.upper(), [name.rstrip("s"), *keys], body, width, paint)
    events = data.get("events", [])[:EVENTS_SHOWN]
    body = [
        [
            (time.strftime("%H:%M:%S", time.localtime(e["time"])), "dim"),
            (e["text"], "red" if e["level"] in ("warning", "error") else ""),
        ]
        for e in events
    ]
    lines += table("EVENTS (newest first)", ["time", "event"], body, width, paint)
    return "\n".join(lines).rstrip() + "\n"


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return "" if value is None else str(value)


def _painter(colour: bool) -> Paint:
    def paint(text: str, name: str) -> str:
        code = COLOURS.get(name)
        return f"\x1b[{code}m{text}\x1b[0m" if colour and code and text else text

    return paint


def table(
    title: str, head: Sequence[str], rows: Sequence[Sequence[Cell]], width: int, paint: Paint
) -> list[str]:
    """A title, a header and the rows, columns fitted into `width` (long cells cut)."""
    if not rows:
        return [paint(title, "bold") + "  " + paint("none", "dim"), ""]
    sizes = [max(len(head[i]), *(len(row[i][0]) for row in rows)) for i in range(len(head))]
    while sum(sizes) + 2 * (len(sizes) - 1) > width and max(sizes) > 8:
        sizes[sizes.index(max(sizes))] -= 1

    def cut(text: str, size: int) -> str:
        return text if len(text) <= size else text[: size - 1] + "…"

    def line(cells: Sequence[Cell]) -> str:
        # The last cell is not padded: no trailing blanks (a colour code would hide them).
        last = len(cells) - 1
        return "  ".join(
            paint(cut(t, s) if i == last else cut(t, s).ljust(s), c)
            for i, ((t, c), s) in enumerate(zip(cells, sizes, strict=True))
        ).rstrip()

    return [paint(title, "bold"), line([(h, "dim") for h in head]), *map(line, rows), ""]
