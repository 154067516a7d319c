"""The `redis:` section and `scope: global`: checked by `fender check`, secrets kept."""

from __future__ import annotations

import textwrap

import pytest

from proxy.__main__ import main
from proxy.config.loader import ConfigError
from proxy.config.model import load_config

BASE = """\
version: 1
listeners:
  - name: egress
    address: 127.0.0.1:15000
    routes:
      - {name: chat, upstream: openai, policy: llm}
upstreams:
  openai:
    endpoints: [https://api.openai.com]
    rate_limit: {rate: 3000/m, burst: 100, scope: global}
policies:
  llm:
    rate_limit: {rate: 500/m, burst: 50, key: "header:x-tenant-id", scope: global}
"""


def write(tmp_path, text: str):
    path = tmp_path / "fender.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text: str, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env or {})
    return [p.render("f") for p in info.value.problems]


def test_scope_global_without_redis_is_an_error_naming_each_limit(tmp_path, capsys):
    found = problems(tmp_path, BASE)
    assert found == [
        "f:10: upstreams.openai.rate_limit.scope: scope: global keeps the bucket in Redis: "
        "add a `redis:` section",
        "f:13: policies.llm.rate_limit.scope: scope: global keeps the bucket in Redis: "
        "add a `redis:` section",
    ]
    assert main(["check", str(tmp_path / "fender.yaml")]) == 1
    assert "add a `redis:` section" in capsys.readouterr().err


def test_a_redis_section_makes_the_same_file_good_with_its_defaults(tmp_path, capsys):
    path = write(tmp_path, BASE + "redis: {url: 'redis://redis.infra:6379/0'}\n")
    config = load_config(path, env={})
    assert config.redis is not None
    assert (config.redis.timeout, config.redis.prefix, config.redis.fleet) == (
        0.025,
        "fender",
        None,
    )
    assert config.policies["llm"].rate_limit.scope == "global"
    assert main(["check", str(path)]) == 0


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ("{url: 'http://redis:6379'}", "a Redis URL starts with redis:// (or rediss://"),
        ("{url: 'redis://:6379/0'}", "the Redis URL names no host"),
        ("{url: 'redis://h:6379/x'}", "the Redis URL's path is a database number"),
        ("{url: 'redis://h:99999/0'}", "not a Redis URL"),
        ("{url: 'redis://h/0', timeout: 0ms}", "redis.timeout is between 1ms and 5s"),
        ("{url: 'redis://h/0', prefix: 'a b'}", "String should match pattern"),
        ("{url: 'redis://h/0', fleet: 'UPPER'}", "String should match pattern"),
        ("{url: 'redis://h/0', pasword: x}", "unknown key"),
        ("{url: 'redis://:pw@h/0', password: pw}", "not both"),
    ],
)
def test_a_bad_redis_section_is_an_error_with_its_line(tmp_path, redis, message):
    found = problems(tmp_path, BASE + f"redis: {redis}\n")
    assert len(found) == 1 and found[0].startswith("f:14: redis") and message in found[0]


def test_the_url_and_password_are_never_echoed_in_an_error(tmp_path):
    found = problems(tmp_path, BASE + "redis: {url: 'http://u:hunter2@h/0', timeout: 5}\n")
    assert found and not any("hunter2" in p for p in found)
    found = problems(
        tmp_path,
        BASE + "redis: {url: '${REDIS_URL}'}\n",
        env={"REDIS_URL": "redis://u:hunter2@h:6379/x"},
    )
    assert found and not any("hunter2" in p for p in found)


def test_the_password_is_redacted_in_the_public_view_and_the_hash(tmp_path):
    literal = BASE + "redis: {url: 'rediss://app:hunter2@redis.infra:6380/1'}\n"
    config = load_config(write(tmp_path, literal), env={})
    view = config.public_view()["redis"]
    assert view["url"] == "rediss://app:<redacted>@redis.infra:6380/1"
    rotated = load_config(write(tmp_path, literal.replace("hunter2", "swordfish")), env={})
    assert rotated.hash == config.hash  # a rotated password keeps the fleet's name
    from_file = tmp_path / "password"
    from_file.write_text("hunter2\n")
    text = BASE + f"redis: {{url: 'redis://h/0', password: '${{file:{from_file}}}'}}\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.redis.password == "hunter2"
    assert config.public_view()["redis"]["password"] == f"${{file:{from_file}}}"
    assert "hunter2" not in str(config.public_view())


def test_redis_py_is_imported_only_by_a_file_with_a_redis_section():
    import subprocess
    import sys

    code = (
        "import sys; from proxy.app import Fender; from proxy.config.model import Config; "
        "from tests.support.proxy import config; "
        "Fender(Config.model_validate(config({'u': {'endpoints': ['http://127.0.0.1:1']}}))); "
        "print('redis' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
