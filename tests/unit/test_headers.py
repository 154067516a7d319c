"""Header hygiene: hop-by-hop removal, credentials replaced, Fender's own headers kept."""

from __future__ import annotations

from proxy.config.model import HeaderRules
from proxy.http.headers import Headers
from proxy.http.hygiene import IdSource, RequestHeaders, request_id


def test_request_headers_drop_hop_by_hop_and_connection_listed():
    rules = RequestHeaders(HeaderRules(), forwarded=False)
    out = rules.build(
        Headers(
            [
                ("Connection", "keep-alive, X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "5"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "005"),
                ("Content_Length", "5"),
                ("Transfer_Encoding", "chunked"),
                ("Host", "app"),
                ("Accept", "a"),
                ("Accept", "b"),
            ]
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
        Headers([("Authorization", "a"), ("authorization", "b"), ("Cookie", "c")]), "rid", None
    )
    assert out.getall("authorization") == ["Bearer real"]
    assert "cookie" not in out


def test_forwarded_headers_append_the_client():
    rules = RequestHeaders(HeaderRules(), forwarded=True)
    out = rules.build(Headers([("X-Forwarded-For", "10.0.0.1")]), "rid", "127.0.0.1")
    assert out["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert out["x-forwarded-proto"] == "http"
    plain = RequestHeaders(HeaderRules(), forwarded=False)
    assert "x-forwarded-for" not in plain.build(Headers([("X-Forwarded-For", "1")]), "r", None)


def test_field_values_pass_byte_for_byte():
    headers = Headers.of([b"content-disposition"], [b"Content-Disposition: r\xe9sum\xe9"])
    assert headers.raw(b"content-disposition") == b"r\xe9sum\xe9"
    assert headers.get("content-disposition") == "r\xe9sum\xe9"  # Latin-1, one char a byte
    assert headers.encoded() == b"Content-Disposition: r\xe9sum\xe9\r\n"


def test_request_id_is_kept_when_sane_and_replaced_when_not():
    ids = IdSource()
    assert request_id(Headers([("X-Request-Id", "abc-1")]), ids) == "abc-1"
    made = {request_id(Headers(), ids) for _ in range(1000)}
    assert len(made) == 1000 and all(len(r) == 32 for r in made)
    assert request_id(Headers([("X-Request-Id", "x" * 500)]), ids) != "x" * 500
    assert request_id(Headers([("X-Request-Id", "a\tb")]), ids) != "a\tb"
    assert request_id(Headers([("X-Request-Id", 'a"b')]), ids) != 'a"b'
