"""The stale cache: kept only when complete, bounded, aged."""

from __future__ import annotations

import pytest

from proxy.config_policy import Stale
from proxy.http.headers import Headers
from proxy.stale_cache import StaleCache
from tests.support.clock import FakeClock
from tests.support.streams import Collect, stream_of


def drain(stream) -> bytes:
    sink = Collect()
    stream.pipe(sink)
    return sink.body


async def test_a_complete_answer_is_kept_and_served_with_its_age():
    clock = FakeClock()
    cache = StaleCache(Stale(max_age="10m"), clock)
    headers = Headers({"content-type": "application/json"})
    assert drain(cache.tee("GET", "/a?x=1", 200, headers, stream_of(b"ab", b"cd"))) == b"abcd"
    headers["x-fender-outcome"] = "ok"  # added to the live answer later: not to the kept one
    clock.advance(42)
    entry, age = cache.get("GET", "/a?x=1")
    assert (entry.status, entry.body, age) == (200, b"abcd", 42)
    assert dict(entry.headers.items()) == {"content-type": "application/json"}
    assert cache.get("GET", "/a?x=2") is None
    clock.advance(600)
    assert cache.get("GET", "/a?x=1") is None  # older than max_age


async def test_an_interrupted_answer_is_not_kept():
    cache = StaleCache(Stale(), FakeClock())
    stream = stream_of(b"ab", finished=False)
    cache.tee("GET", "/a", 200, Headers(), stream)
    sink = Collect()
    stream.pipe(sink)
    stream.abort("reset")
    assert sink.failed == "reset"
    assert cache.get("GET", "/a") is None


async def test_bounded_by_entries_and_bytes():
    cache = StaleCache(Stale(max_entries=2, max_bytes="100B"), FakeClock())
    for key in ("/1", "/2", "/3"):
        drain(cache.tee("GET", key, 200, Headers(), stream_of(b"x" * 5)))
    assert len(cache) == 2 and cache.get("GET", "/1") is None
    drain(cache.tee("GET", "/big", 200, Headers(), stream_of(b"x" * 11)))  # over a tenth
    assert cache.get("GET", "/big") is None


def test_only_2xx_to_listed_methods_are_kept():
    cache = StaleCache(Stale(), FakeClock())
    plain = Headers({"content-type": "text/plain"})
    assert cache.keeps("GET", 200, plain, False) and cache.keeps("HEAD", 204, plain, False)
    assert not cache.keeps("POST", 200, plain, False) and not cache.keeps("GET", 404, plain, False)


@pytest.mark.parametrize(
    ("headers", "personal"),
    [
        ({"set-cookie": "session=1"}, False),
        ({"cache-control": "private, max-age=60"}, False),
        ({"cache-control": "no-store"}, False),
        ({}, True),  # the request carried the app's own Authorization or Cookie
    ],
)
def test_answers_for_one_user_are_never_kept(headers, personal):
    cache = StaleCache(Stale(), FakeClock())
    assert not cache.keeps("GET", 200, Headers(headers), personal)


def test_a_whole_body_is_kept_directly():
    cache = StaleCache(Stale(max_bytes="100B"), FakeClock())
    headers = Headers({"etag": "1"})
    cache.put("GET", "/a", 200, headers, b"body")
    headers["x-fender-outcome"] = "ok"
    cache.put("GET", "/big", 200, Headers(), b"x" * 11)
    entry, _ = cache.get("GET", "/a")
    assert (entry.body, dict(entry.headers.items())) == (b"body", {"etag": "1"})
    assert cache.get("GET", "/big") is None
