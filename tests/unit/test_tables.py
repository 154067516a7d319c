"""`fender status`'s tables: fitted to the width, plain without a terminal, coloured on one,
and whatever section another part adds."""

from __future__ import annotations

from proxy.control.tables import render, table

STATUS = {
    "ready": True,
    "draining": False,
    "config_hash": "abc123",
    "time": 1_800_000_000.0,
    "degradation": {"level": "limited", "derived": "limited", "override": None},
    "routes": {
        "chat": {
            "total": {"ok": 90, "failed": 10},
            "last_minute": {"ok": 9, "failed": 1},
            "rate_per_s": 0.2,
            "good_ratio": 0.9,
            "latency_ms": {"p50": 12.5, "p99": 950.0},
            "slo": {
                "availability": {
                    "objective": 0.999,
                    "last_5m": {"burn_rate": 100.0},
                    "last_1h": {"burn_rate": 20.0},
                }
            },
        }
    },
    "upstreams": {
        "llm": {
            "priority": "high",
            "endpoints": [{"endpoint": "https://a.example", "usable": False}],
            "breaker": {
                "state": "open",
                "open_for_s": 12.5,
                "trips_in_a_row": 1,
                "override": {"state": "open", "expires_in_s": 300.0},
            },
            "bulkhead": {"in_flight": 1, "queued": 0, "max_concurrent": 8, "max_queued": 4},
            "quota": None,
        }
    },
    "faults": [
        {"id": "f1", "route": "chat", "delay": "1s", "percentage": "50%", "expires_in_s": 60.0}
    ],
    "events": [{"time": 1_800_000_000.0, "level": "warning", "text": "circuit of llm: open"}],
    "sections": ["queues"],
    "queues": {"mail": {"depth": 3, "oldest_s": 1.5}},
}


def test_plain_text_has_every_table():
    out = render(STATUS, width=200)
    assert "\x1b[" not in out
    for title in ("ROUTES", "UPSTREAMS", "FAULTS AND OVERRIDES", "QUEUES", "EVENTS (newest first)"):
        assert title in out.splitlines()
    chat = next(line for line in out.splitlines() if line.startswith("chat "))
    assert chat.split()[:5] == ["chat", "0.2", "90.00%", "12.5ms", "950ms"]
    assert "100.0x" in chat and "20.0x" in chat
    llm = next(line for line in out.splitlines() if line.startswith("llm "))
    assert "OPEN" in llm and "12.5s" in llm and "open 5m00s" in llm and "0/1 up" in llm
    assert "fault f1  route chat    delay 1s on 50%  1m00s" in out
    assert any(line.split() == ["mail", "3", "1.5"] for line in out.splitlines())


def test_a_terminal_gets_colour_and_a_narrow_one_cut_cells():
    assert "\x1b[31mOPEN" in render(STATUS, width=200, colour=True)
    lines = table("T", ["a", "b"], [[("x" * 30, ""), ("y" * 30, "")]], 40, lambda t, c: t)
    assert all(len(line) <= 40 for line in lines) and lines[2].endswith("…")
