"""What each objective counts: the good rule, the latency threshold as a bucket, and
counters that never go backwards across a reload."""

from __future__ import annotations

import io

import pytest

from proxy.app import Fender
from proxy.config.model import Config
from proxy.observe.logs import JsonLog
from proxy.observe.metrics import Metrics
from proxy.observe.request_metrics import relayout
from proxy.observe.series import Kept
from proxy.observe.slo import Objective
from tests.support.clock import FakeClock
from tests.support.proxy import config


def objectives(threshold: float = 0.2) -> list[Objective]:
    return [
        Objective("chat", "availability", 0.999, None, 720),
        Objective("chat", "latency", 0.95, threshold, 720),
    ]


def exported(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in metrics.slo.collect():
        for sample in family.samples:
            out[(sample.name, sample.labels["route"], sample.labels["slo"])] = sample.value
    return out


@pytest.mark.parametrize(
    ("outcome", "status", "counted", "bad"),
    [
        ("ok", 200, True, False),
        ("ok", 404, True, False),  # the app's mistake, answered
        ("failed", 503, True, True),  # relayed 5xx after retries
        ("ok", 500, True, True),  # relayed 5xx that retry.on does not list
        ("rejected", 503, True, True),  # Fender's own: circuit_open, bulkhead_full, shed
        ("failed", 200, True, True),  # a stream cut after its head went out
        ("failed", 429, True, True),  # an upstream's 429 relayed as failed
        ("fallback", 503, True, False),  # a static fallback answer is good
        ("fallback", 200, True, False),
        ("rejected", 429, False, False),  # a local 429: the app was told to wait
        ("cancelled", 499, False, False),  # the app left before its answer
        ("cancelled", 200, True, False),  # ... or while reading a good one
    ],
)
def test_the_good_rule(outcome, status, counted, bad):
    metrics = Metrics()
    metrics.slo.configure(objectives())
    metrics.count_request("chat", "up", outcome, status, 0.01, 0.01)
    got = exported(metrics)
    assert got[("fender_slo_answers_total", "chat", "availability")] == int(counted)
    assert got[("fender_slo_bad_answers_total", "chat", "availability")] == int(bad)


def test_latency_judges_time_to_headers_at_the_thresholds_bucket():
    metrics = Metrics()
    metrics.slo.configure(objectives(threshold=0.2))
    assert 0.2 in metrics.hot.buckets  # a bucket of both histograms: the count is exact
    count = metrics.count_request
    count("chat", "up", "ok", 200, 30.0, 0.2)  # a long stream whose headers came in time
    count("chat", "up", "ok", 200, 0.2000001, 0.2000001)  # just late
    count("chat", "up", "rejected", 429, 0.0, 0.0)  # a local 429: not counted
    count("chat", "up", "cancelled", 499, 5.0)  # no head went out: not counted
    got = exported(metrics)
    assert got[("fender_slo_answers_total", "chat", "latency")] == 2
    assert got[("fender_slo_bad_answers_total", "chat", "latency")] == 1
    assert got[("fender_slo_objective", "chat", "latency")] == 0.95
    text = metrics.render().decode()
    assert 'fender_response_headers_seconds_bucket{le="0.2",route="chat"} 1.0' in text
    # The whole answer's histogram has every answer: here, only the 429 ended by 0.2s.
    assert 'fender_request_duration_seconds_bucket{le="0.2",route="chat"} 1.0' in text
    assert 'fender_request_duration_seconds_count{route="chat"} 4.0' in text


def test_a_new_threshold_goes_on_from_the_counts_so_far():
    metrics = Metrics()
    metrics.slo.configure(objectives(threshold=0.5))
    for seconds in (0.1, 0.3, 0.7):
        metrics.count_request("chat", "up", "ok", 200, seconds, seconds)
    before = exported(metrics)
    assert before[("fender_slo_bad_answers_total", "chat", "latency")] == 1
    metrics.slo.configure(objectives(threshold=0.2))  # a reload: stricter
    assert exported(metrics) == before  # nothing jumps, nothing goes back
    metrics.count_request("chat", "up", "ok", 200, 0.3, 0.3)  # now slow
    after = exported(metrics)
    assert after[("fender_slo_answers_total", "chat", "latency")] == 4
    assert after[("fender_slo_bad_answers_total", "chat", "latency")] == 2


def test_an_objective_a_reload_adds_starts_at_zero():
    metrics = Metrics()
    for _ in range(3):
        metrics.count_request("chat", "up", "failed", 502, 0.1, 0.1)
    metrics.slo.configure(objectives())
    assert exported(metrics)[("fender_slo_answers_total", "chat", "availability")] == 0
    metrics.slo.configure([])
    assert exported(metrics) == {}


def test_forgetting_a_removed_upstreams_answers_keeps_the_counts():
    metrics = Metrics()
    metrics.slo.configure(objectives())
    metrics.count_request("chat", "old", "failed", 502, 0.1, 0.1)
    metrics.count_request("chat", "new", "ok", 200, 0.1, 0.1)
    before = exported(metrics)
    metrics.retain(
        Kept(routes=frozenset({"chat"}), upstreams=frozenset({"new"}), endpoints=frozenset())
    )
    assert exported(metrics) == before


def test_an_inserted_bucket_is_empty_and_what_it_splits_stays_above():
    assert relayout([1, 2, 3], (1.0, 2.0), (0.5, 1.0, 1.5, 2.0)) == [0, 1, 0, 2, 3]


def test_status_gives_good_ratio_and_burn_over_5m_and_1h():
    clock = FakeClock()
    data = config(
        {"up": {"endpoints": ["http://127.0.0.1:9"]}},
        routes=[
            {
                "name": "chat",
                "upstream": "up",
                "slo": {"availability": "99%", "latency": {"threshold": "200ms", "target": "90%"}},
            }
        ],
    )
    fender = Fender(Config.model_validate(data), log=JsonLog(io.BytesIO()), clock=clock)
    count = fender.metrics.count_request
    fender.board.snapshot()
    for _ in range(100):  # an hour ago: 2 failed, all fast
        count("chat", "up", "ok", 200, 0.1, 0.1)
    count("chat", "up", "failed", 502, 0.1, 0.1)
    count("chat", "up", "failed", 502, 0.1, 0.1)
    for _ in range(59):
        clock.advance(60)
        fender.board.snapshot()
    for _ in range(18):  # the last 5 minutes: 10% slow, none failed
        count("chat", "up", "ok", 200, 0.1, 0.1)
    count("chat", "up", "ok", 200, 0.5, 0.5)
    count("chat", "up", "ok", 200, 0.5, 0.5)
    route = fender.status()["routes"]["chat"]
    availability, latency = route["slo"]["availability"], route["slo"]["latency"]
    assert availability["last_5m"] == {
        "answers": 20,
        "bad": 0,
        "good_ratio": 1.0,
        "burn_rate": 0.0,
        "window_s": 300.0,
    }
    assert availability["last_1h"]["answers"] == 122  # from the snapshot 59 minutes old
    assert availability["last_1h"]["bad"] == 2
    assert latency["last_5m"]["burn_rate"] == 1.0  # 10% slow of a 10% budget
    assert latency["threshold_s"] == 0.2 and route["slo"]["window"] == "30d"
    assert route["latency_ms"]["p50"] is not None
