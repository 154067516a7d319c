"""Header hygiene: hop-by-hop removal, credentials replaced, Fender's own headers kept."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import HeaderRules
from proxy.headers import RequestHeaders, id_source, request_id, response_headers


def proxy_of(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_request_headers_drop_hop_by_hop_and_connection_listed():
    rules = RequestHeaders(HeaderRules(), forwarded=False)
    out = rules.build(
        proxy_of(
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "5"),
            ("Transfer-Encoding", "chunked"),
            ("Host", "app"),
            ("Accept", "a"),
            ("Accept", "b"),
        ),
        "rid",
        None,
    )
    assert list(out.items()) == [("Accept", "a"), ("Accept", "b"), ("x-request-id", "rid")]


def test_set_replaces_every_app_value_and_remove_drops():
    rules = RequestHeaders(
        HeaderRules(set={"authorization": "Bearer real"}, remove=["cookie"]), forwarded=False
    )
    out = rules.build(
        proxy_of(("Authorization", "a"), ("authorization", "b"), ("Cookie", "c")), "rid", None
    )
    assert out.getall("authorization") == ["Bearer real"]
    assert "cookie" not in out


def test_forwarded_headers_append_the_client():
    rules = RequestHeaders(HeaderRules(), forwarded=True)
    out = rules.build(proxy_of(("X-Forwarded-For", "10.0.0.1")), "rid", "127.0.0.1")
    assert out["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert out["x-forwarded-proto"] == "http"


def test_response_headers_drop_hop_by_hop_and_length():
    out = response_headers(
        proxy_of(
            ("Connection", "close, X-Up"),
            ("X-Up", "1"),
            ("Content-Length", "3"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        )
    )
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_request_id_is_kept_when_sane_and_replaced_when_not():
    ids = id_source()
    assert request_id(proxy_of(("X-Request-Id", "abc-1")), ids) == "abc-1"
    made = {request_id(proxy_of(), ids) for _ in range(1000)}
    assert len(made) == 1000 and all(len(r) == 32 for r in made)
    assert request_id(proxy_of(("X-Request-Id", "x" * 500)), ids) != "x" * 500
    assert request_id(proxy_of(("X-Request-Id", "a\tb")), ids) != "a\tb"
