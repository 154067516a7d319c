"""The Dockerfile: linted by hadolint, built by podman (.ci/image), and run the way the
chart runs it: the chart's rendered policy and token mounted read-only, a read-only root
filesystem, a non-root user, no capabilities.

Building takes about a minute the first time on a machine (the stand-in base image), then
about 15 s; `pytest -m "not image"` leaves these tests out of a quick local run.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from packaging.requirements import Requirement

from tests.support.tools import ROOT, find, render, run
from tests.support.upstream import ScriptedUpstream, Step


def test_dockerfile_passes_hadolint() -> None:
    done = run("hadolint", ROOT / "Dockerfile", check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lock_pins_every_dependency_within_pyproject() -> None:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[requirement.name] = spec.version
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        assert dependency.name in pins, f"{dependency.name} is not in requirements.lock"
        assert dependency.specifier.contains(pins[dependency.name]), (
            f"requirements.lock pins {dependency.name}=={pins[dependency.name]}, "
            f"outside pyproject.toml's {dependency.specifier}"
        )


def podman(*args: str | Path, check: bool = True) -> Any:
    return run(ROOT / ".ci" / "image", "podman", *args, check=check)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    name = run(ROOT / ".ci" / "image", "build", timeout=300).stdout.strip()
    yield name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def policy_text(egress: int, endpoint: str, attempts: Any) -> str:
    return f"""\
version: 1
listeners:
  - name: egress
    address: 127.0.0.1:{egress}
    routes: [{{name: all, match: {{path_prefix: /}}, upstream: up, policy: p}}]
upstreams:
  up: {{endpoints: ["{endpoint}"]}}
policies:
  p: {{retry: {{attempts: {attempts}, on: [503], backoff: {{base: 10ms}}}}}}
"""


def pod_files(tmp_path: Path, values: dict[str, Any]) -> tuple[dict[str, Any], Path, Path, str]:
    """Render the chart, and lay out its ConfigMap and Secret as the kubelet mounts them."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    manifests = render(values_file)
    policy_dir, token_dir = tmp_path / "policy", tmp_path / "token"
    policy_dir.mkdir()
    token_dir.mkdir()
    configmap = find(manifests, "ConfigMap", "demo-fender-policy")
    (policy_dir / "fender.yaml").write_text(configmap["data"]["fender.yaml"])
    token = base64.b64decode(find(manifests, "Secret")["data"]["token"]).decode()
    (token_dir / "token").write_text(token)
    spec = find(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["initContainers"]
    for directory in (policy_dir, token_dir):  # the kubelet's modes: readable, not writable
        directory.chmod(0o755)
        for file in directory.iterdir():
            file.chmod(0o644)
    return container, policy_dir, token_dir, token


def run_args(container: dict[str, Any], policy_dir: Path, token_dir: Path) -> list[str]:
    """`podman run` flags for the container's securityContext and mounts."""
    context = container["securityContext"]
    args = ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
    if context["readOnlyRootFilesystem"]:
        args.append("--read-only")
    if context["capabilities"]["drop"] == ["ALL"]:
        args += ["--cap-drop", "ALL"]
    if not context["allowPrivilegeEscalation"]:
        args += ["--security-opt", "no-new-privileges"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args += ["-v", f"{policy_dir}:{mounts['fender-policy']}:ro"]
    args += ["-v", f"{token_dir}:{mounts['fender-token']}:ro"]
    for env in container["env"]:
        args += ["-e", f"{env['name']}={env['value']}"]
    return args


@pytest.mark.image
@pytest.mark.timeout(400)
async def test_image_serves_the_charts_policy_locked_down_and_drains_on_sigterm(
    image: str, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    control, egress = free_port(), free_port()
    policy = policy_text(egress, upstream.url, attempts=2)
    values = {"control": {"port": control}, "policy": policy}
    container, policy_dir, token_dir, token = pod_files(tmp_path, values)
    name = f"fender-test-{uuid.uuid4().hex[:8]}"
    args = run_args(container, policy_dir, token_dir)
    await asyncio.to_thread(podman, "run", "-d", "--name", name, *args, image)
    try:
        async with aiohttp.ClientSession() as client:
            base = f"http://127.0.0.1:{control}"
            for _ in range(200):  # the startup probe's view: /readyz within 20 s
                try:
                    async with client.get(f"{base}/readyz") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                logs = await asyncio.to_thread(podman, "logs", name)
                pytest.fail(f"never ready:\n{logs.stdout}{logs.stderr}")

            upstream.push(Step(503), Step(200, body=b"through the image"))
            async with client.get(f"http://127.0.0.1:{egress}/hello") as answer:
                assert answer.status == 200
                assert await answer.read() == b"through the image"
                assert answer.headers["x-fender-attempts"] == "2"
            assert [seen.path_qs for seen in upstream.seen] == ["/hello", "/hello"]

            async with client.get(f"{base}/metrics") as metrics:
                assert (
                    'fender_requests_total{code_class="2xx",outcome="retried",route="all",upstream="up"} 1.0'
                    in await metrics.text()
                )
            async with client.get(f"{base}/status") as status:
                assert status.status == 401  # off loopback, the token guards the control API
            headers = {"authorization": f"Bearer {token}"}
            async with client.get(f"{base}/status", headers=headers) as status:
                assert status.status == 200

        who = await asyncio.to_thread(podman, "exec", name, "id", "-u")
        assert who.stdout.strip() == str(container["securityContext"]["runAsUser"])
        write = await asyncio.to_thread(podman, "exec", name, "touch", "/opt/fender/x", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr

        await asyncio.to_thread(podman, "stop", "-t", "30", name)  # SIGTERM, as the kubelet
        state = await asyncio.to_thread(podman, "inspect", "--format", "{{.State.ExitCode}}", name)
        assert state.stdout.strip() == "0"
        logs = (await asyncio.to_thread(podman, "logs", name)).stdout
        assert '"event":"drain' in logs
    finally:
        await asyncio.to_thread(podman, "rm", "-f", name, check=False)


@pytest.mark.image
@pytest.mark.timeout(400)
def test_image_refuses_a_broken_policy_and_names_the_line(image: str, tmp_path: Path) -> None:
    values = {"policy": policy_text(free_port(), "http://127.0.0.1:9", attempts="lots")}
    container, policy_dir, token_dir, _ = pod_files(tmp_path, values)
    done = podman("run", "--rm", *run_args(container, policy_dir, token_dir), image, check=False)
    assert done.returncode == 1
    assert "/etc/fender/fender.yaml:9" in done.stderr and "attempts" in done.stderr
