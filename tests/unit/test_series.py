"""Which series a config keeps, and what retain() removes (no sockets)."""

from __future__ import annotations

import pytest

from proxy.observe.metrics import Metrics
from proxy.observe.series import Kept

KEPT = Kept(
    routes=frozenset({"r", "_unmatched"}),
    upstreams=frozenset({"u", "_unmatched"}),
    endpoints=frozenset({("u", "http://a")}),
)


@pytest.mark.parametrize(
    ("labels", "kept"),
    [
        ({"route": "r", "upstream": "u", "outcome": "ok"}, True),
        ({"route": "_unmatched", "upstream": "_unmatched"}, True),
        ({"route": "gone"}, False),
        ({"upstream": "gone"}, False),
        ({"upstream": "u", "endpoint": "http://a"}, True),
        ({"upstream": "u", "endpoint": "http://b"}, False),
        ({"scope": "route:r"}, True),
        ({"scope": "route:gone"}, False),
        ({"scope": "upstream:u"}, True),
        ({"scope": "upstream:gone"}, False),
        ({"result": "success"}, True),
    ],
)
def test_kept_labels(labels, kept):
    assert KEPT.keeps(labels) is kept


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_retain_removes_the_series_of_gone_names_and_counting_goes_on():
    metrics = Metrics()
    metrics.count_attempt("u", "http://a", "response")
    metrics.count_attempt("u", "http://b", "response")
    metrics.count_request("gone", "u", "ok", 200, 0.1)
    metrics.observe_rate_limit_wait("upstream:gone", 0.5)
    metrics.observe_rate_limit_wait("route:r", 0.5)
    metrics.zero(metrics.fallbacks, "gone", "static")
    metrics.retain(KEPT)
    attempts = "fender_upstream_attempts_total"
    assert sample(metrics, attempts, upstream="u", endpoint="http://a", result="response") == 1
    assert sample(metrics, attempts, upstream="u", endpoint="http://b", result="response") is None
    assert (
        sample(
            metrics,
            "fender_requests_total",
            route="gone",
            upstream="u",
            outcome="ok",
            code_class="2xx",
        )
        is None
    )
    assert sample(metrics, "fender_rate_limit_waits_seconds_count", scope="upstream:gone") is None
    assert sample(metrics, "fender_rate_limit_waits_seconds_count", scope="route:r") == 1
    assert sample(metrics, "fender_fallbacks_total", route="gone", kind="static") is None
    assert sample(metrics, "fender_config_reloads_total", result="failure") == 0  # not scoped
    # A name that comes back is counted afresh, on a series that is exported again.
    metrics.count_attempt("u", "http://b", "response")
    assert sample(metrics, attempts, upstream="u", endpoint="http://b", result="response") == 1


def test_zero_series_noted_while_deferred_are_exported_only_when_asked():
    metrics = Metrics()
    with metrics.deferred() as pending:
        metrics.zero(metrics.fallbacks, "r", "static")
    assert sample(metrics, "fender_fallbacks_total", route="r", kind="static") is None
    metrics.zero_all(pending)
    assert sample(metrics, "fender_fallbacks_total", route="r", kind="static") == 0
