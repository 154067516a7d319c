"""The stale cache: kept only when complete, bounded, aged, and only ever served to a
request that would have selected the answer."""

from __future__ import annotations

import pytest

from proxy.config.policy import Stale
from proxy.http.headers import Headers
from proxy.state.stale_cache import StaleCache
from tests.support.clock import FakeClock
from tests.support.streams import Collect, stream_of


def drain(stream) -> bytes:
    sink = Collect()
    stream.pipe(sink)
    return sink.body


def request(**headers: str) -> Headers:
    return Headers({k.replace("_", "-"): v for k, v in headers.items()})


NOBODY = request()


def keep(cache: StaleCache, target: str, asked=NOBODY, answer: bytes = b"x", **headers: str):
    """Keep a 200 to GET `target` asked with `asked`, whose headers are `headers`."""
    response = Headers({k.replace("_", "-"): v for k, v in headers.items()})
    assert cache.keeps("GET", 200, response)
    cache.put(cache.key("GET", target, asked, response), 200, response, answer)


def served(cache: StaleCache, target: str, asked=NOBODY) -> bytes | None:
    kept = cache.get("GET", target, asked)
    return kept[0].body if kept else None


async def test_a_complete_answer_is_kept_and_served_with_its_age():
    clock = FakeClock()
    cache = StaleCache(Stale(max_age="10m"), clock)
    headers = Headers({"content-type": "application/json"})
    key = cache.key("GET", "/a?x=1", NOBODY, headers)
    assert drain(cache.tee(key, 200, headers, stream_of(b"ab", b"cd"))) == b"abcd"
    headers["x-fender-outcome"] = "ok"  # added to the live answer later: not to the kept one
    clock.advance(42)
    entry, age = cache.get("GET", "/a?x=1", NOBODY)
    assert (entry.status, entry.body, age) == (200, b"abcd", 42)
    assert dict(entry.headers.items()) == {"content-type": "application/json"}
    assert cache.get("GET", "/a?x=2", NOBODY) is None
    clock.advance(600)
    assert cache.get("GET", "/a?x=1", NOBODY) is None  # older than max_age


async def test_an_interrupted_answer_is_not_kept():
    cache = StaleCache(Stale(), FakeClock())
    stream = stream_of(b"ab", finished=False)
    cache.tee(cache.key("GET", "/a", NOBODY, Headers()), 200, Headers(), stream)
    sink = Collect()
    stream.pipe(sink)
    stream.abort("reset")
    assert sink.failed == "reset"
    assert cache.get("GET", "/a", NOBODY) is None


async def test_bounded_by_entries_and_bytes():
    cache = StaleCache(Stale(max_entries=2, max_bytes="100B"), FakeClock())
    for target in ("/1", "/2", "/3"):
        key = cache.key("GET", target, NOBODY, Headers())
        drain(cache.tee(key, 200, Headers(), stream_of(b"x" * 5)))
    assert len(cache) == 2 and cache.get("GET", "/1", NOBODY) is None
    key = cache.key("GET", "/big", NOBODY, Headers())
    drain(cache.tee(key, 200, Headers(), stream_of(b"x" * 11)))  # over a tenth
    assert cache.get("GET", "/big", NOBODY) is None
    assert served(cache, "/3") == b"x" * 5


def test_only_2xx_to_listed_methods_are_kept():
    cache = StaleCache(Stale(), FakeClock())
    plain = Headers({"content-type": "text/plain"})
    assert cache.keeps("GET", 200, plain) and cache.keeps("HEAD", 204, plain)
    assert not cache.keeps("POST", 200, plain) and not cache.keeps("GET", 404, plain)


@pytest.mark.parametrize(
    "headers",
    [
        {"set-cookie": "session=1"},
        {"cache-control": "private, max-age=60"},
        {"cache-control": "no-store"},
        {"vary": "*"},
        {"vary": "accept-language, *"},
    ],
)
def test_answers_not_to_be_stored_are_never_kept(headers):
    cache = StaleCache(Stale(), FakeClock())
    assert not cache.keeps("GET", 200, Headers(headers))


def test_a_whole_body_is_kept_directly():
    cache = StaleCache(Stale(max_bytes="100B"), FakeClock())
    headers = Headers({"etag": "1"})
    cache.put(cache.key("GET", "/a", NOBODY, headers), 200, headers, b"body")
    headers["x-fender-outcome"] = "ok"
    cache.put(cache.key("GET", "/big", NOBODY, Headers()), 200, Headers(), b"x" * 11)
    entry, _ = cache.get("GET", "/a", NOBODY)
    assert (entry.body, dict(entry.headers.items())) == (b"body", {"etag": "1"})
    assert cache.get("GET", "/big", NOBODY) is None


@pytest.mark.parametrize(
    "credential",
    ["authorization", "cookie", "proxy-authorization", "x-api-key", "api-key", "x-tenant-id"],
)
def test_an_answer_to_one_credential_is_only_served_to_that_credential(credential):
    cache = StaleCache(Stale(), FakeClock(), credentials=["X-Tenant-Id"])  # the rate-limit key
    alice, bob = request(**{credential: "alice-7"}), request(**{credential: "bob-8"})
    keep(cache, "/me", alice, b"alice's")
    assert served(cache, "/me", alice) == b"alice's"
    assert served(cache, "/me", bob) is None
    assert served(cache, "/me", NOBODY) is None
    keep(cache, "/me", NOBODY, b"anyone's")
    assert served(cache, "/me", bob) is None
    assert served(cache, "/me", NOBODY) == b"anyone's"
    assert served(cache, "/me", alice) == b"alice's"


def test_credentials_are_kept_only_as_digests():
    cache = StaleCache(Stale(), FakeClock())
    keep(cache, "/me", request(authorization="Bearer sk-live-secret", cookie="sid=c00kie"))
    remembered = repr(list(cache._entries)) + repr(cache._vary)
    assert "sk-live-secret" not in remembered and "c00kie" not in remembered


def test_the_headers_vary_names_select_the_answer():
    cache = StaleCache(Stale(), FakeClock())
    english, french = request(accept_language="en"), request(accept_language="fr")
    keep(cache, "/home", english, b"hello", vary="Accept-Language, X-Unused")
    assert served(cache, "/home", english) == b"hello"
    assert served(cache, "/home", french) is None
    assert served(cache, "/home", NOBODY) is None
    keep(cache, "/home", french, b"bonjour", vary="accept-language,x-unused")
    assert (served(cache, "/home", english), served(cache, "/home", french)) == (
        b"hello",
        b"bonjour",
    )


def test_a_gzip_body_never_goes_to_an_app_that_did_not_ask_for_gzip():
    cache = StaleCache(Stale(), FakeClock())
    gzip = request(accept_encoding="gzip, br")
    keep(cache, "/data", gzip, b"\x1f\x8b...", content_encoding="gzip")  # no Vary given
    assert served(cache, "/data", NOBODY) is None
    assert served(cache, "/data", request(accept_encoding="identity")) is None
    assert served(cache, "/data", gzip) == b"\x1f\x8b..."


def test_forgotten_entries_take_their_vary_names_with_them():
    cache = StaleCache(Stale(max_entries=1), FakeClock())
    keep(cache, "/a", vary="accept-language")
    keep(cache, "/b")
    assert served(cache, "/a") is None and cache._vary == {("GET", "/b"): ()}
