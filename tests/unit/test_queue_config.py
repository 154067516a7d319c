"""The `queues:` sections and `routes[].delivery`, as `fender check` and a load see them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.config.loader import ConfigError
from proxy.config.model import Config, load_config

POLICY = """\
version: 1
listeners:
  - name: egress
    address: 127.0.0.1:15000
    routes:
      - name: whatsapp
        match: {{path_prefix: /whatsapp/, methods: [POST]}}
        upstream: greenapi
        delivery: {{queue: {queue}}}
upstreams:
  greenapi:
    endpoints: [https://api.green-api.com]
queues:
  outbox:
    store: {store}
"""


def write(tmp_path, queue: str = "outbox", store: str = "sqlite://outbox.db", extra: str = ""):
    path = tmp_path / "fender.yaml"
    path.write_text(POLICY.format(queue=queue, store=store) + extra)
    return path


def problems(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [p.render("f") for p in info.value.problems]


def test_a_queue_loads_with_the_issues_defaults_and_a_path_beside_the_policy(tmp_path) -> None:
    config: Config = load_config(write(tmp_path))
    queue = config.queues["outbox"]
    assert queue.path == tmp_path / "outbox.db"
    dumped = queue.model_dump(mode="json")
    assert dumped["schedule"] == ["5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h"]
    assert (dumped["max_attempts"], dumped["max_age"], dumped["max_messages"]) == (
        15,
        "24h",
        100000,
    )
    assert (dumped["max_body"], dumped["concurrency"], dumped["key"]) == ("1MiB", 8, None)
    route = config.listeners[0].routes[0]
    assert route.delivery is not None and route.delivery.queue == "outbox"
    assert config.warnings == []


def test_a_route_naming_no_queue_is_refused_at_its_key(tmp_path) -> None:
    assert problems(write(tmp_path, queue="inbox")) == [
        "f:9: listeners[0].routes[0].delivery.queue: no queue named 'inbox' (known: outbox)"
    ]


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ("ftp://host/x", "a store is sqlite:///PATH or redis://HOST:PORT/DB"),
        ("sqlite://", "give the SQLite file's path"),
        ("redis://:6379/0", "names no host"),
        ("redis://host:port/0", "port is not a number"),
        ("redis://host:6379/zero", "a database number"),
    ],
)
def test_a_store_url_that_cannot_work_is_refused(tmp_path, store: str, problem: str) -> None:
    (found,) = problems(write(tmp_path, store=store))
    assert "queues.outbox.store" in found and problem in found


def test_a_sqlite_file_whose_directory_cannot_be_made_is_refused(tmp_path) -> None:
    (tmp_path / "afile").write_text("")
    (found,) = problems(write(tmp_path, store=f"sqlite://{tmp_path}/afile/sub/q.db"))
    assert "queues.outbox: cannot create the store" in found and "is not a directory" in found
    (tmp_path / "adir").mkdir()
    (found,) = problems(write(tmp_path, store=f"sqlite://{tmp_path}/adir"))
    assert "is a directory, not a file" in found


def test_a_missing_directory_that_can_be_made_is_fine(tmp_path) -> None:
    config = load_config(write(tmp_path, store=f"sqlite://{tmp_path}/var/lib/fender/q.db"))
    assert config.queues["outbox"].path == tmp_path / "var/lib/fender/q.db"


def test_a_key_is_a_header(tmp_path) -> None:
    path = write(tmp_path, extra="    key: client_ip\n")
    assert any("key is `header:NAME`" in p for p in problems(path))
    path = write(tmp_path, extra="    key: 'header:X-Tenant-Id'\n")
    assert load_config(path).queues["outbox"].header == "x-tenant-id"


def test_a_queue_no_route_uses_is_a_warning_and_upgrade_is_refused(tmp_path) -> None:
    path = write(tmp_path, extra="  spare: {store: 'sqlite://spare.db'}\n")
    assert [w.render("f") for w in load_config(path).warnings] == [
        "f:16: queues.spare: warning: no route delivers through this queue"
    ]
    text = (
        (tmp_path / "fender.yaml")
        .read_text()
        .replace(
            "delivery: {queue: outbox}", "delivery: {queue: outbox}\n        upgrade: [websocket]"
        )
    )
    (tmp_path / "fender.yaml").write_text(text)
    assert any("cannot also take Upgrade" in p for p in problems(tmp_path / "fender.yaml"))


def test_a_redis_password_never_shows_in_the_public_view(tmp_path) -> None:
    config = load_config(write(tmp_path, store="redis://:hunter2@redis.infra:6379/0"))
    store = config.public_view()["queues"]["outbox"]["store"]
    assert store == "redis://:<redacted>@redis.infra:6379/0"
    assert "hunter2" not in config.hash


def test_fender_check_reports_a_dangling_queue(tmp_path) -> None:
    path = write(tmp_path, queue="inbox")
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 1 and "no queue named 'inbox'" in done.stderr
