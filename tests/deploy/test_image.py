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

from tests.support.proxy import wait_for
from tests.support.tools import ROOT, find, render, run
from tests.support.upstream import ScriptedUpstream, Step


def test_dockerfile_passes_hadolint() -> None:
    done = run("hadolint", ROOT / "Dockerfile", check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            found[requirement.name] = spec.version
    return found


@pytest.mark.parametrize(
    ("lock", "section"),
    [
        ("requirements.lock", ("project", "dependencies")),
        ("requirements-build.lock", ("build-system", "requires")),
    ],
)
def test_locks_pin_every_dependency_within_pyproject(lock: str, section: tuple[str, str]) -> None:
    pinned = pins(ROOT / lock)
    table, key = section
    for dependency in map(
        Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())[table][key]
    ):
        assert dependency.name in pinned, f"{dependency.name} is not in {lock}"
        assert dependency.specifier.contains(pinned[dependency.name]), (
            f"{lock} pins {dependency.name}=={pinned[dependency.name]}, "
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


def policy_text(egress: int, endpoint: str, attempts: Any, prefix: str = "/") -> str:
    return f"""\
version: 1
listeners:
  - name: egress
    address: 127.0.0.1:{egress}
    routes: [{{name: all, match: {{path_prefix: {prefix}}}, upstream: up, policy: p}}]
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
    mount(policy_dir, find(manifests, "ConfigMap", "demo-fender-policy")["data"], "v1")
    token = base64.b64decode(find(manifests, "Secret")["data"]["token"]).decode()
    mount(token_dir, {"token": token}, "v1")
    spec = find(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["initContainers"]
    return container, policy_dir, token_dir, token


def mount(directory: Path, files: dict[str, str], version: str) -> None:
    """What the kubelet does to a mounted ConfigMap or Secret: the files go into a new
    directory, then `..data` is swapped to it at once; each name links through `..data`."""
    (directory / f"..{version}").mkdir()
    for name, text in files.items():
        (directory / f"..{version}" / name).write_text(text)
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    (directory / "..data_tmp").symlink_to(f"..{version}")
    (directory / "..data_tmp").replace(directory / "..data")


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
async def test_image_serves_the_charts_policy_locked_down_reloads_it_and_drains(
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

            async def ready() -> bool:
                try:
                    async with client.get(f"{base}/readyz") as answer:
                        return answer.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(ready, seconds=20)  # the startup probe's view

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

            # `helm upgrade` with a new policy: the kubelet swaps the file, Fender reloads it.
            values["policy"] = policy_text(egress, upstream.url, attempts=2, prefix="/v2/")
            (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
            configmap = find(render(tmp_path / "values.yaml"), "ConfigMap", "demo-fender-policy")
            mount(policy_dir, configmap["data"], "v2")

            async def reloaded() -> bool:  # no route for /hello in the new policy
                async with client.get(f"http://127.0.0.1:{egress}/hello") as answer:
                    return answer.status == 404

            await wait_for(reloaded, seconds=20)
            async with client.get(f"http://127.0.0.1:{egress}/v2/hello") as answer:
                assert answer.status == 200

        who = await asyncio.to_thread(podman, "exec", name, "id", "-u")
        assert who.stdout.strip() == str(container["securityContext"]["runAsUser"])
        write = await asyncio.to_thread(podman, "exec", name, "touch", "/opt/fender/x", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr

        await asyncio.to_thread(podman, "stop", "-t", "30", name)  # SIGTERM, as the kubelet
        state = await asyncio.to_thread(podman, "inspect", "--format", "{{.State.ExitCode}}", name)
        assert state.stdout.strip() == "0"
        logs = (await asyncio.to_thread(podman, "logs", name)).stdout
        assert '"event":"reloaded"' in logs and '"event":"drain' in logs
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
