"""GET /status's per-route outcomes: since start, and over about the last minute."""

from __future__ import annotations

import io

from proxy.app import Fender
from proxy.config.model import Config
from proxy.observe.logs import JsonLog
from tests.support.clock import FakeClock
from tests.support.proxy import config


def test_last_minute_is_the_difference_from_a_snapshot_about_a_minute_old():
    clock = FakeClock()
    fender = Fender(
        Config.model_validate(config({"up": {"endpoints": ["http://127.0.0.1:9"]}})),
        log=JsonLog(io.BytesIO()),
        clock=clock,
    )
    count = fender.metrics.count_request
    for _ in range(5):
        count("all", "up", "ok", 200, 0.01)
    fender.board.snapshot()  # t=0
    clock.advance(10)
    count("all", "up", "failed", 502, 0.01)
    fender.board.snapshot()  # t=10
    clock.advance(55)  # the t=0 snapshot is 65s old: the oldest within a minute and a tick
    count("all", "up", "ok", 200, 0.01)
    assert fender.board.route_outcomes() == {
        "all": {"total": {"ok": 6, "failed": 1}, "last_minute": {"ok": 1, "failed": 1}}
    }
