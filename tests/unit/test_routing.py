"""Route matching and path normalization, as tables."""

from __future__ import annotations

import pytest

from proxy.config.model import Route
from proxy.http.headers import Headers
from proxy.http.routing import CompiledRoute, Router, normalize_path


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("/a/b.json", "/a/b.json"),
        ("/a/..b", "/a/..b"),
        ("/..", None),
        ("/a/../../b", None),
        ("/%2e%2e/x", None),
        ("relative", None),
    ],
)
def test_normalize_path(raw, normalized):
    assert normalize_path(raw) == normalized


def compile_route(**fields) -> CompiledRoute:
    return CompiledRoute.compile(Route.model_validate({"name": "r", "upstream": "u", **fields}))


def headers(**values: str) -> Headers:
    return Headers(values)


@pytest.mark.parametrize(
    ("match", "method", "host", "path", "hdrs", "expected"),
    [
        ({}, "GET", "x", "/anything", {}, True),
        ({"path_prefix": "/api/"}, "GET", "x", "/api/v1", {}, True),
        ({"path_prefix": "/api/"}, "GET", "x", "/apiv1", {}, False),
        ({"path": "/exact"}, "GET", "x", "/exact", {}, True),
        ({"path": "/exact"}, "GET", "x", "/exact/more", {}, False),
        ({"methods": ["POST", "PUT"]}, "PUT", "x", "/", {}, True),
        ({"methods": ["POST"]}, "GET", "x", "/", {}, False),
        ({"host": "api.internal"}, "GET", "API.internal:8080", "/", {}, True),
        ({"host": "api.internal"}, "GET", "other.internal", "/", {}, False),
        ({"host": "*.internal"}, "GET", "svc.internal", "/", {}, True),
        ({"host": "*.internal"}, "GET", "internal", "/", {}, False),
        ({"headers": {"X-Tenant": "blue"}}, "GET", "x", "/", {"x-tenant": "blue"}, True),
        ({"headers": {"x-tenant": "blue"}}, "GET", "x", "/", {"x-tenant": "red"}, False),
        ({"headers": {"x-tenant": "blue"}}, "GET", "x", "/", {}, False),
    ],
)
def test_route_matching(match, method, host, path, hdrs, expected):
    assert compile_route(match=match).matches(method, host, path, headers(**hdrs)) is expected


@pytest.mark.parametrize(
    ("rewrite", "path", "expected"),
    [
        ({}, "/a", "/a"),
        ({"strip_prefix": "/openai"}, "/openai/v1/chat", "/v1/chat"),
        ({"strip_prefix": "/openai"}, "/openai", "/"),
        ({"strip_prefix": "/openai"}, "/other", "/other"),
        ({"prefix": "/v1"}, "/chat", "/v1/chat"),
        ({"strip_prefix": "/x", "prefix": "/api"}, "/x/y", "/api/y"),
    ],
)
def test_rewrite(rewrite, path, expected):
    assert compile_route(rewrite=rewrite).rewrite(path) == expected


def test_first_match_wins():
    a = CompiledRoute.compile(Route(name="a", upstream="u", match={"path_prefix": "/a"}))
    b = CompiledRoute.compile(Route(name="b", upstream="u"))
    router = Router([a, b])
    assert router.match("GET", "x", "/a/1", headers()) is a
    assert router.match("GET", "x", "/b", headers()) is b
    assert Router([a]).match("GET", "x", "/b", headers()) is None
