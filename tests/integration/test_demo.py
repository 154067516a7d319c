"""`fender demo`: the built-in upstream misbehaves, and the summary shows it every second."""

from __future__ import annotations

import io

from proxy.demo import run_demo


async def test_demo_prints_a_summary_each_second_through_every_phase():
    out = io.StringIO()
    assert await run_demo(5.6, out=out, phase_seconds=1.0) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("fender demo: app -> http://127.0.0.1:")
    seconds = [line for line in lines[1:] if "sent=" in line and not line.startswith("total")]
    assert len(seconds) >= 3
    total = lines[-1]
    assert total.startswith("total: sent=")
    # Retries rescued requests in the failing phases; in the outage the breaker opened and
    # the fallback answered.
    counts = dict(part.split("=") for part in total.removeprefix("total: ").split() if "=" in part)
    assert int(counts["retried"]) > int(counts["failed"])
    assert int(counts["fallback"]) > 0
    assert any("circuit=open" in line for line in seconds)
    answered = sum(int(counts[k]) for k in ("ok", "retried", "fallback", "failed"))
    assert answered == int(counts["sent"])
