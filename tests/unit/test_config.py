"""Loading the policy file: every problem reported with file, line and key path."""

from __future__ import annotations

import textwrap

import pytest

from proxy.config.loader import ConfigError, Document
from proxy.config.model import Config, load_config, validate_document
from proxy.config.upstream import CircuitBreaker

GOOD = """\
version: 1
listeners:
  - name: egress
    address: 127.0.0.1:15000
    routes:
      - name: chat
        match: {path_prefix: /openai/, methods: [POST]}
        upstream: openai
upstreams:
  openai:
    endpoints: [https://api.openai.com]
    headers: {set: {authorization: "Bearer ${OPENAI_API_KEY}"}}
"""


def load(tmp_path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "fender.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, env=env if env is not None else {"OPENAI_API_KEY": "sk-secret-1"})


def problems(tmp_path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return [p.render("f") for p in info.value.problems]


def test_good_file_loads_with_defaults_stated(tmp_path):
    config = load(tmp_path, GOOD)
    assert config.upstreams["openai"].headers.set["authorization"] == "Bearer sk-secret-1"
    assert config.control.address == "127.0.0.1:9901"
    assert config.drain.delay == 5.0 and config.drain.timeout == 25.0
    assert config.upstreams["openai"].tls.verify is True


def test_config_is_frozen(tmp_path):
    config = load(tmp_path, GOOD)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        config.version = 2  # type: ignore[misc]


def test_every_problem_is_listed_with_line_and_key_path(tmp_path):
    text = GOOD.replace("methods: [POST]}", "methods: [POST], pathprefix: /x}").replace(
        "endpoints: [https://api.openai.com]", "endpoints: [ftp://x]\n    pool: {idle_timeout: 5}"
    )
    assert problems(tmp_path, text) == [
        "f:7: listeners[0].routes[0].match.pathprefix: unknown key (a typo, or a section this version of Fender does not have)",
        "f:11: upstreams.openai.endpoints[0]: not an endpoint: write http:// or https://, a host, an optional port and path, no user info, query or fragment, like 'https://api.example.com' (got 'ftp://x')",
        "f:12: upstreams.openai.pool.idle_timeout: write it as a string with a unit, like '250ms' (got 5)",
    ]


def test_duplicate_keys_are_an_error_not_a_silent_override(tmp_path):
    text = GOOD + "  openai:\n    endpoints: [https://other.example]\n"
    assert problems(tmp_path, text) == [
        "f:13: upstreams.openai: duplicate key (first defined on line 10)"
    ]


def test_missing_variable_is_named_and_its_value_never_echoed(tmp_path):
    assert problems(tmp_path, GOOD, env={}) == [
        "f:12: upstreams.openai.headers.set.authorization: environment variable OPENAI_API_KEY is not set (and has no default)"
    ]


def test_variable_default_and_secret_file(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    text = GOOD.replace("${OPENAI_API_KEY}", f"${{file:{secret}}}").replace(
        "127.0.0.1:15000", "127.0.0.1:${PORT:-15001}"
    )
    config = load(tmp_path, text, env={})
    assert config.listeners[0].address == "127.0.0.1:15001"
    assert config.upstreams["openai"].headers.set["authorization"] == "Bearer sk-from-file"


def test_bad_value_from_environment_is_not_echoed(tmp_path):
    text = GOOD.replace("https://api.openai.com", '"${ENDPOINT}"')
    (line,) = problems(tmp_path, text, env={"OPENAI_API_KEY": "k", "ENDPOINT": "sk-looks-secret"})
    assert "sk-looks-secret" not in line and "endpoints[0]" in line


def test_dangling_names_and_duplicates_are_reported_at_their_keys(tmp_path):
    text = GOOD.replace(
        "upstream: openai", "upstream: opena\n      - {name: chat, upstream: openai}"
    )
    assert problems(tmp_path, text) == [
        "f:8: listeners[0].routes[0].upstream: no upstream named 'opena' (known: openai)",
        "f:9: listeners[0].routes[1].name: route name 'chat' is used twice",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nlisteners: [\n", "not valid YAML"),
        ("", "the file is empty"),
        ("version: 2\nlisteners: []\nupstreams: {}\n", "version: Input should be 1"),
    ],
)
def test_unusable_files_say_why(tmp_path, text, expected):
    assert any(expected in line for line in problems(tmp_path, text))


def test_non_loopback_control_needs_a_token(tmp_path):
    text = GOOD + "control: {address: 0.0.0.0:9901}\n"
    (line,) = problems(tmp_path, text)
    assert "not loopback: set control.token_file" in line


def test_public_view_redacts_header_values_and_shows_templates(tmp_path):
    text = GOOD.replace("headers: {set: {", "headers: {set: {x-literal: sk-literal, ")
    view = load(tmp_path, text).public_view()
    shown = view["upstreams"]["openai"]["headers"]["set"]
    assert shown == {"authorization": "Bearer ${OPENAI_API_KEY}", "x-literal": "<redacted>"}
    assert "sk-secret-1" not in str(view) and "sk-literal" not in str(view)
    assert view["drain"]["delay"] == "5s"


def test_public_view_redacts_route_match_and_static_fallback_header_values(tmp_path):
    text = GOOD.replace(
        "methods: [POST]}", "methods: [POST], headers: {x-tenant: tenant-secret-7}}"
    ).replace("upstream: openai", "upstream: openai\n        policy: p") + (
        "policies:\n  p:\n    fallback:\n      chain:\n"
        "        - static: {status: 503, headers: {x-token: static-secret-8}, body: sorry}\n"
    )
    config = load(tmp_path, text)
    view = config.public_view()
    assert view["listeners"][0]["routes"][0]["match"]["headers"] == {"x-tenant": "<redacted>"}
    static = view["policies"]["p"]["fallback"]["chain"][0]["static"]
    assert static["headers"] == {"x-token": "<redacted>"} and static["body"] == "sorry"
    assert "tenant-secret-7" not in str(view) and "static-secret-8" not in str(view)
    # The running config still has the values.
    assert config.listeners[0].routes[0].match.headers == {"x-tenant": "tenant-secret-7"}


def test_keys_are_text_as_written_so_on_is_not_a_boolean(tmp_path):
    text = GOOD.replace("upstream: openai", "upstream: openai\n        policy: p") + (
        "policies:\n  p:\n    retry:\n      on: [503, 5xx, reset]\n      attempts: 2\n"
    )
    config = load(tmp_path, text)
    assert config.policies["p"].retry.on == ("503", "5xx", "reset")


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("{route: nope, abort: 503}", "f:14: faults[0].route: no route named 'nope'"),
        ("{upstream: openai}", "f:14: faults[0]: give a delay, an abort status or reset: true"),
        (
            "{route: chat, upstream: openai, reset: true}",
            "f:14: faults[0]: give exactly one of route or upstream",
        ),
    ],
)
def test_declared_faults_are_checked(tmp_path, fault, problem):
    assert problems(tmp_path, GOOD + f"faults:\n  - {fault}\n") == [problem]


def test_bad_response_is_a_condition_and_a_failure_by_default(tmp_path):
    text = GOOD.replace("upstream: openai", "upstream: openai\n        policy: p") + (
        "policies:\n  p:\n    retry: {on: [bad_response, 503]}\n"
    )
    config = load(tmp_path, text)
    assert config.policies["p"].retry.on == ("bad_response", "503")
    assert "bad_response" in CircuitBreaker().failure_on
    limits = config.upstreams["openai"].limits
    assert (limits.max_header_size, limits.max_headers) == (8 * 1024, 100)


def with_ca_file(ca_file: str) -> str:
    return GOOD.replace(
        "    headers: {set:", f"    tls: {{ca_file: {ca_file}}}\n    headers: {{set:"
    )


def test_a_ca_file_is_read_relative_to_the_policy_file(tmp_path):
    import trustme

    (tmp_path / "certs").mkdir()
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "certs" / "ca.pem"))
    config = load(tmp_path, with_ca_file("certs/ca.pem"))
    assert config.upstreams["openai"].tls.ca_file == tmp_path / "certs" / "ca.pem"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read ca_file {path}: No such file or directory"),
        ("not a certificate\n", "ca_file {path} holds no PEM certificate"),
        ("", "ca_file {path} holds no PEM certificate"),
    ],
    ids=["missing", "not-pem", "empty"],
)
def test_a_ca_file_must_exist_and_be_pem(tmp_path, content, problem):
    if content is not None:
        (tmp_path / "ca.pem").write_text(content)
    path = tmp_path / "ca.pem"
    assert problems(tmp_path, with_ca_file("ca.pem")) == [
        f"f:12: upstreams.openai.tls.ca_file: {problem.format(path=path)} (got 'ca.pem')"
    ]


def test_dangling_names_are_reported_together_with_value_errors(tmp_path):
    text = GOOD.replace("upstream: openai", "upstream: opena\n        policy: nope").replace(
        "endpoints: [https://api.openai.com]",
        "endpoints: [https://api.openai.com]\n    pool: {idle_timeout: 5}",
    )
    assert problems(tmp_path, text) == [
        "f:8: listeners[0].routes[0].upstream: no upstream named 'opena' (known: openai)",
        "f:9: listeners[0].routes[0].policy: no policy named 'nope' (known: none)",
        "f:13: upstreams.openai.pool.idle_timeout: write it as a string with a unit, like '250ms' (got 5)",
    ]


@pytest.mark.parametrize(
    ("address", "endpoint", "loops"),
    [
        ("127.0.0.1:15000", "http://127.0.0.1:15000", True),
        ("127.0.0.1:15000", "http://localhost:15000/v1", True),
        ("127.0.0.1:15000", "http://0.0.0.0:15000", True),
        ("0.0.0.0:15000", "http://127.0.0.1:15000", True),
        ("0.0.0.0:15000", "http://localhost:15000", True),
        ("0.0.0.0:15000", "http://127.0.0.53:15000", True),
        ("[::]:15000", "http://[::1]:15000", True),
        ("localhost:15000", "http://127.0.0.1:15000", True),
        ("127.0.0.1:80", "http://LOCALHOST", True),
        ("127.0.0.1:443", "https://127.0.0.1", True),
        ("10.1.2.3:15000", "http://10.1.2.3:15000", True),
        ("127.0.0.1:15000", "http://127.0.0.1:15001", False),
        ("127.0.0.1:15000", "https://127.0.0.1:15000", True),  # the port is what counts
        ("127.0.0.2:15000", "http://127.0.0.1:15000", False),
        ("127.0.0.1:443", "http://127.0.0.1", False),
        ("127.0.0.1:15000", "https://api.openai.com", False),
    ],
)
def test_an_endpoint_that_is_one_of_fenders_own_listeners_is_refused(
    tmp_path, address, endpoint, loops
):
    text = GOOD.replace("127.0.0.1:15000", f'"{address}"')
    text = text.replace("https://api.openai.com", f'"{endpoint}"')
    if not loops:
        load(tmp_path, text)
        return
    (problem,) = problems(tmp_path, text)
    assert problem.startswith("f:11: upstreams.openai.endpoints[0]: ")
    assert f"listener egress's own address ({address})" in problem and "loop" in problem


def warnings_of(tmp_path, text: str) -> list[str]:
    return [p.render("f") for p in load(tmp_path, text).warnings]


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("{}", "{path_prefix: /x/}", True),
        ("{path_prefix: /api/}", "{path_prefix: /api/v1/}", True),
        ("{path_prefix: /api/}", "{path: /api/health}", True),
        ("{path: /a}", "{path: /a}", True),
        (
            "{path_prefix: /api/, methods: [GET, POST]}",
            "{path_prefix: /api/, methods: [GET]}",
            True,
        ),
        ("{headers: {x-t: a}}", "{headers: {x-t: a, x-u: b}}", True),
        ("{host: '*.example.com'}", "{host: a.example.com, path: /}", True),
        ("{path_prefix: /api/v1/}", "{path_prefix: /api/}", False),
        ("{path_prefix: /api/, methods: [GET]}", "{path_prefix: /api/}", False),
        ("{host: a.example.com}", "{path_prefix: /}", False),
        ("{headers: {x-t: a}}", "{path_prefix: /}", False),
        ("{path: /a}", "{path_prefix: /a}", False),
    ],
)
def test_a_route_that_an_earlier_route_shadows_is_a_warning(tmp_path, earlier, later, shadowed):
    text = GOOD.replace(
        "        match: {path_prefix: /openai/, methods: [POST]}\n        upstream: openai\n",
        f"        match: {earlier}\n        upstream: openai\n"
        f"      - name: later\n        match: {later}\n        upstream: openai\n",
    )
    expected = (
        [
            "f:9: listeners[0].routes[1]: warning: never matched: route 'chat' (routes[0]) before it takes every request it would"
        ]
        if shadowed
        else []
    )
    assert warnings_of(tmp_path, text) == expected


def test_per_try_longer_than_first_byte_is_a_warning(tmp_path):
    text = GOOD.replace("upstream: openai", "upstream: openai\n        policy: p") + (
        "policies:\n  p:\n    timeouts: {per_try: 90s, first_byte: 30s}\n"
        "  q:\n    timeouts: {per_try: 10m}\n  fine:\n    timeouts: {per_try: 10s}\n"
    )
    assert warnings_of(tmp_path, text) == [
        "f:16: policies.p.timeouts.per_try: warning: per_try (90s) is longer than first_byte (30s): attempts are cut at first_byte anyway",
        "f:18: policies.q.timeouts.per_try: warning: per_try (10m) is longer than first_byte (5m): attempts are cut at first_byte anyway",
    ]


@pytest.mark.parametrize("value", ["Bearer sk-1\n", "a\r\nx-injected: 1", "a\0b"])
def test_a_header_value_with_a_line_break_is_refused_without_being_echoed(value):
    data = {
        "version": 1,
        "listeners": [
            {"name": "l", "address": "127.0.0.1:0", "routes": [{"name": "r", "upstream": "u"}]}
        ],
        "upstreams": {
            "u": {"endpoints": ["http://a"], "headers": {"set": {"authorization": value}}}
        },
    }
    with pytest.raises(ConfigError) as refused:
        validate_document(Document("f.yaml", data))
    assert "line break" in str(refused.value) and "sk-1" not in str(refused.value)
