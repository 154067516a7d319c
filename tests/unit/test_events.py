"""The ring of last events: fed by the log whatever its level, bounded, newest first."""

from __future__ import annotations

import io

from proxy.observe.events import EventRing
from proxy.observe.logs import JsonLog
from tests.support.clock import FakeClock


def test_the_log_feeds_the_ring_whatever_its_level_and_the_ring_keeps_the_last_50():
    clock = FakeClock()
    ring, log = EventRing(clock), JsonLog(io.BytesIO())
    log.tap(ring.offer)
    log.set_level("error")  # circuit lines are dropped from the log, not from the ring
    for i in range(60):
        clock.advance(1)
        log.event("circuit", "warning", upstream=f"u{i}", was="closed", to="open", why="5 failures")
    log.event("library", "warning", message="not an operator's event")
    entries = ring.view()
    assert len(entries) == 50
    assert entries[0]["text"] == "circuit of u59: closed -> open (5 failures)"
    assert entries[0]["time"] == clock.wall() and entries[-1]["text"].startswith("circuit of u10:")


def test_a_failed_reload_says_its_first_problem():
    ring = EventRing(FakeClock())
    ring.offer("reload_failed", "error", {"problems": ["f.yaml:3: x: bad", "f.yaml:9: y: bad"]})
    ring.offer("reload_failed", "error", {"error": "OSError: port taken"})
    texts = [e["text"] for e in ring.view()]
    assert texts == [
        "reload failed, the running policy kept: OSError: port taken",
        "reload failed, the running policy kept: 2 problem(s), first: f.yaml:3: x: bad",
    ]
