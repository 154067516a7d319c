"""What ships in config/ and the CLI around it: valid, current, and checked the same way."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from proxy.__main__ import main, schema
from proxy.config.loader import parse_document
from proxy.config.model import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "config").glob("*.yaml"))


def test_schema_json_is_current():
    on_disk = json.loads((ROOT / "config" / "schema.json").read_text())
    assert on_disk == schema(), (
        "config/schema.json is stale: run `fender schema > config/schema.json`"
    )


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_bundled_file_passes_check_and_the_schema(path, capsys):
    assert main(["check", str(path)]) == 0
    assert "ok" in capsys.readouterr().out
    # As editors read it (YAML 1.2 keys: `on` is text), before any ${...} is filled in.
    jsonschema.validate(parse_document(path.read_text(), str(path), env={}).data, schema())
    load_config(path, env={})


def test_check_fails_with_every_problem_on_stderr(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nlisteners: []\nupstreams: {}\nextra: 1\n")
    good = CONFIG_FILES[0]
    assert main(["check", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: 3 problems" in err
    assert f"{bad}:4: extra: unknown key" in err


def test_version_and_schema_commands(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("fender ")
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("# run the tests", 1)[1].split("```", 1)[0]
    command = block.splitlines()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command.strip() in ci_lines


def test_check_prints_warnings_and_still_exits_0(tmp_path, capsys):
    path = tmp_path / "shadowed.yaml"
    path.write_text(
        "version: 1\nlisteners:\n  - name: egress\n    address: 127.0.0.1:15000\n    routes:\n"
        "      - {name: all, upstream: up}\n      - {name: api, upstream: up, match: {path_prefix: /api/}}\n"
        "upstreams:\n  up: {endpoints: ['https://example.com']}\n"
    )
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: ok" in out and "1 warning" in out
    assert f"{path}:7: listeners[0].routes[1]: warning: never matched: route 'all'" in err
