"""The Helm chart, rendered by a real helm and checked by real validators.

Every values set in charts/fender/ci/ (and the defaults) must lint strictly, render, and
validate against Kubernetes' own schemas; the Prometheus Operator's kinds are checked
against tests/deploy/schemas/. The policy files the chart ships must pass `fender check`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import proxy
from tests.support.tools import CHART, find, helm_run, render, run

VALUES_SETS = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]
VALUES_IDS = ["default", *(p.name.removesuffix("-values.yaml") for p in VALUES_SETS[1:])]
CRD_SCHEMAS = {
    kind: json.loads((Path(__file__).parent / "schemas" / f"{kind.lower()}.json").read_text())
    for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule")
}
# The oldest Kubernetes the chart supports (native sidecars) and the newest the validator knows.
KUBERNETES = ("1.29.0", "1.37.0")
# What the values sets' policies read: the monitoring one's API key, the queues one's token.
API_KEY_ENV = {"OPENAI_API_KEY": "sk-test", "GREENAPI_TOKEN": "gr-test"}


def values_args(values: Path | None) -> tuple[Path, ...]:
    return (values,) if values else ()


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def fender_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = (spec.get("initContainers") or []) + spec["containers"]
    found = [c for c in containers if c["name"] == "fender"]
    assert len(found) == 1
    return found[0]


def policy_file(manifests: list[dict[str, Any]]) -> str:
    configmap = find(manifests, "ConfigMap", "demo-fender-policy")
    text: str = configmap["data"]["fender.yaml"]
    return text


def fender_check(path: Path, env: dict[str, str] | None = None) -> Any:
    return run(
        sys.executable, "-m", "proxy", "check", path, check=False, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("values", VALUES_SETS, ids=VALUES_IDS)
def test_chart_lints_strict(values: Path | None) -> None:
    args: list[str | Path] = ["lint", "--strict", CHART]
    if values:
        args += ["-f", values]
    out = helm_run(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", VALUES_SETS, ids=VALUES_IDS)
def test_every_manifest_validates_against_kubernetes(values: Path | None, tmp_path: Path) -> None:
    manifests = render(*values_args(values))
    core = [m for m in manifests if m["kind"] not in CRD_SCHEMAS]
    for manifest in manifests:
        if manifest["kind"] in CRD_SCHEMAS:
            jsonschema.validate(manifest, CRD_SCHEMAS[manifest["kind"]])
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(core))
    for version in KUBERNETES:
        done = run("kubernetes-validate", "--strict", "--quiet", "-k", version, path, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_validators_reject_a_misspelt_field(tmp_path: Path) -> None:
    """The checks above can fail: a typo in a container or a PodMonitor is caught."""
    manifests = render(CHART / "ci" / "sidecar-only-values.yaml")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "x", "image": "x", "restartPolicyy": "Always"}]},
            },
        },
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(deployment))
    done = run("kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES[1], path, check=False)
    assert done.returncode != 0 and "restartPolicyy" in done.stdout + done.stderr
    monitor = find(manifests, "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, CRD_SCHEMAS["PodMonitor"])


def test_native_sidecar_by_default_starts_ready_before_the_app() -> None:
    spec = pod_spec(render())
    (fender,) = spec["initContainers"]
    assert fender["name"] == "fender"
    assert fender["restartPolicy"] == "Always"
    assert fender["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "fender-admin"}
    assert fender["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert fender["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert [c["name"] for c in spec["containers"]] == ["app"]
    assert "drain:\n  delay: 0s\n" in policy_file(render())


def test_classic_sidecar_is_a_second_container_that_outlasts_the_app() -> None:
    manifests = render(CHART / "ci" / "classic-values.yaml")
    spec = pod_spec(manifests)
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["app", "fender"]
    assert "restartPolicy" not in spec["containers"][1]
    assert "drain:\n  delay: 45s\n  timeout: 15s\n" in policy_file(manifests)
    assert spec["terminationGracePeriodSeconds"] == 75
    # Left empty, a classic sidecar's delay outlasts an app on the default 30 s grace period.
    assert "delay: 30s" in policy_file(render(**{"sidecar.mode": "classic"}))


@pytest.mark.parametrize("values", VALUES_SETS, ids=VALUES_IDS)
def test_every_container_runs_locked_down(values: Path | None) -> None:
    manifests = render(*values_args(values))
    for manifest in manifests:
        if manifest["kind"] != "Deployment":
            continue
        spec = manifest["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]


def test_policy_file_is_the_values_policy_then_the_sections_the_chart_owns() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    manifests = render(**{"control.port": "9911"})
    text = policy_file(manifests)
    assert text.startswith(values["policy"].strip())  # verbatim: Fender's errors name its lines
    data = yaml.safe_load(text)
    assert data["control"] == {
        "address": "0.0.0.0:9911",
        "token_file": "/var/run/secrets/fender/token",
    }
    # The container reads that file and that token where the chart mounts them.
    spec = pod_spec(manifests)
    fender = fender_container(spec)
    assert {"name": "FENDER_CONFIG", "value": "/etc/fender/fender.yaml"} in fender["env"]
    mounts = {m["name"]: m for m in fender["volumeMounts"]}
    assert mounts["fender-policy"]["mountPath"] == "/etc/fender"
    assert "subPath" not in mounts["fender-policy"]  # a subPath mount never sees updates
    assert mounts["fender-token"]["mountPath"] == "/var/run/secrets/fender"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["fender-policy"]["configMap"]["name"] == "demo-fender-policy"
    assert volumes["fender-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert fender["ports"] == [{"name": "fender-admin", "containerPort": 9911}]


@pytest.mark.parametrize(
    "values",
    [
        CHART / "values.yaml",
        *(v for v in VALUES_SETS[1:] if "policy" in yaml.safe_load(v.read_text())),
    ],
    ids=lambda path: path.name,
)
def test_values_policy_passes_fender_check(values: Path, tmp_path: Path) -> None:
    """The policy as written in the values: the defaults' and each values set's own."""
    path = tmp_path / "fender.yaml"
    given = yaml.safe_load(values.read_text())
    redis = (given.get("redis") or {}).get("url")  # the chart writes `redis` from values
    path.write_text(given["policy"] + (f"redis: {{url: '{redis}'}}\n" if redis else ""))
    done = fender_check(path, API_KEY_ENV)
    assert done.returncode == 0, done.stderr
    assert "ok (hash" in done.stdout


@pytest.mark.parametrize("values", VALUES_SETS, ids=VALUES_IDS)
def test_rendered_policy_passes_fender_check(values: Path | None, tmp_path: Path) -> None:
    """The file as the pod reads it; only the token's mount path points at a file here."""
    manifests = render(*values_args(values))
    token = tmp_path / "token"
    token.write_text("t0ken")
    password = tmp_path / "password"
    password.write_text("s3cret")
    text = policy_file(manifests).replace("/var/run/secrets/fender/token", str(token))
    text = text.replace("/var/run/secrets/fender-redis/password", str(password))
    path = tmp_path / "fender.yaml"
    path.write_text(text)
    done = fender_check(path, API_KEY_ENV)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"sidecar.mode": "sideways"}, "value must be one of 'native', 'classic'"),
        ({"drain.timeout": "forever"}, "'/drain/timeout': 'forever' does not match"),
        ({"example.replica": "2"}, "additional properties 'replica' not allowed"),
        ({"control.port": "70000"}, "'/control/port'"),
        ({"alerts.errorRatio": "5"}, "'/alerts/errorRatio'"),
        ({"metrics.podMonitor.interval": "30 seconds"}, "'/metrics/podMonitor/interval'"),
        ({"policy": "version: [1"}, "values.policy is not a YAML mapping"),
        ({"policy": "version: 1\ncontrol: {address: 0.0.0.0:1}"}, 'leave out "control"'),
        ({"policy": "version: 1\ndrain: {delay: 1s}"}, 'leave out "drain"'),
        (
            {"example.enabled": "false", "metrics.serviceMonitor.enabled": "true"},
            "with example.enabled=false, use metrics.podMonitor",
        ),
        (
            {"metrics.podMonitor.enabled": "true", "metrics.serviceMonitor.enabled": "true"},
            "would scrape the same pods twice",
        ),
        (
            {"sidecar.mode": "classic", "example.terminationGracePeriodSeconds": "50"},
            "must be longer than Fender's drain.delay + drain.timeout (50 s)",
        ),
        ({"drain.delay": "1m", "drain.timeout": "500ms"}, "(60.5 s)"),
        ({"redis.url": "http://redis:6379"}, "'/redis/url'"),
        ({"redis.timeout": "1m"}, "'/redis/timeout'"),
        (
            {"redis.url": "redis://r:6379/0", "policy": "version: 1\nredis: {url: 'redis://x'}"},
            'leave out "redis"',
        ),
        ({"redis.password.existingSecret": "pw"}, "needs values.redis.url"),
        (
            {"queueStorage.persistentVolumeClaim.enabled": "true", "example.replicas": "2"},
            "an SQLite queue is one process's file",
        ),
        ({"queueStorage.mountPath": "var/lib"}, "'/queueStorage/mountPath'"),
    ],
)
def test_wrong_values_fail_at_install_time(sets: dict[str, str], message: str) -> None:
    args: list[str | Path] = ["template", "demo", CHART]
    for key, value in sets.items():
        args += ["--set-string" if key == "policy" else "--set", f"{key}={value}"]
    done = helm_run(*args, check=False)
    assert done.returncode != 0
    assert message in done.stderr


def test_checksum_annotation_is_optional_and_follows_the_policy() -> None:
    def annotations(**sets: str) -> dict[str, str]:
        template = find(render(**sets), "Deployment")["spec"]["template"]
        return dict(template["metadata"].get("annotations", {}))

    assert "checksum/fender-policy" not in annotations()  # default: hot reload, no roll
    first = annotations(policyChecksum="true")["checksum/fender-policy"]
    changed = annotations(
        policyChecksum="true", policy="version: 1\nlisteners: []\nupstreams: {}\n"
    )["checksum/fender-policy"]
    assert len(first) == 64 and first != changed


def test_metrics_annotations_name_the_control_port() -> None:
    template = find(render(**{"control.port": "9950"}), "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9950",
        "prometheus.io/path": "/metrics",
    }
    off = find(render(**{"metrics.annotations": "false"}), "Deployment")["spec"]["template"]
    assert "annotations" not in off["metadata"]


def test_monitors_scrape_the_sidecars_port_once() -> None:
    manifests = render(CHART / "ci" / "monitoring-values.yaml")
    service = find(manifests, "Service")
    # By number: Endpoints resolve a native sidecar's named port only from Kubernetes 1.32.
    assert {"name": "fender-admin", "port": 9901, "targetPort": 9901} in service["spec"]["ports"]
    service_monitor = find(manifests, "ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0] == {
        "port": "fender-admin",
        "path": "/metrics",
        "interval": "15s",
    }
    assert service_monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    # With a monitor on, the annotations would have a second job scrape the same pods.
    annotations = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in annotations

    # A PodMonitor: the release's pods by default, or the selector given.
    manifests = render(**{"metrics.podMonitor.enabled": "true"})
    pod_monitor = find(manifests, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "fender-admin"
    pod_labels = find(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    own = find(render(CHART / "ci" / "sidecar-only-values.yaml"), "PodMonitor")
    assert own["spec"]["selector"] == {"matchLabels": {"app": "shop"}}


def test_control_token_comes_from_a_secret() -> None:
    manifests = render()
    secret = find(manifests, "Secret")
    token = base64.b64decode(secret["data"]["token"])
    assert len(token) == 40 and token.isalnum()
    volume = next(v for v in pod_spec(manifests)["volumes"] if v["name"] == "fender-token")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    # A Secret of one's own: the chart makes none and mounts that one's key as the token.
    own = render(CHART / "ci" / "monitoring-values.yaml")
    assert not [m for m in own if m["kind"] == "Secret"]
    volume = next(v for v in pod_spec(own)["volumes"] if v["name"] == "fender-token")
    assert volume["secret"] == {
        "secretName": "fender-token",
        "items": [{"key": "control-token", "path": "token"}],
    }


def test_chart_ships_the_version_of_fender_it_was_made_with() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == proxy.__version__
    image = fender_container(pod_spec(render()))["image"]
    assert image.endswith(f":{proxy.__version__}")


PARENT_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
      annotations:
        team: payments
        {{- include "fender.podAnnotations" .Subcharts.fender | nindent 8 }}
    spec:
      initContainers:
        {{- include "fender.initContainers" .Subcharts.fender | nindent 8 }}
      containers:
        - name: shop
          image: shop:1
          env:
            - {name: PAYMENTS_URL, value: "http://127.0.0.1:15000"}
        {{- include "fender.containers" .Subcharts.fender | nindent 8 }}
      volumes:
        - {name: cache, emptyDir: {}}
        {{- include "fender.volumes" .Subcharts.fender | nindent 8 }}
"""


@pytest.mark.parametrize("mode", ["native", "classic"])
def test_named_templates_add_the_sidecar_to_a_users_own_deployment(
    mode: str, tmp_path: Path
) -> None:
    parent = tmp_path / "shop"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 1.0.0\n"
        "dependencies:\n  - {name: fender, version: 0.1.0, condition: fender.enabled}\n"
    )
    fender_values = {"enabled": True, "example": {"enabled": False}, "sidecar": {"mode": mode}}
    (parent / "values.yaml").write_text(yaml.safe_dump({"fender": fender_values}))
    (parent / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    shutil.copytree(CHART, parent / "charts" / "fender")
    manifests = render(chart=parent, release="shop")
    assert sorted(m["kind"] for m in manifests) == ["ConfigMap", "Deployment", "Secret"]
    template = find(manifests, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9901"
    spec = template["spec"]
    fender = fender_container(spec)
    in_init = fender in (spec["initContainers"] or [])
    assert in_init == (mode == "native")
    assert [v["name"] for v in spec["volumes"]] == [
        "cache",
        "fender-policy",
        "fender-token",
        "fender-queues",
    ]
    configmap = find(manifests, "ConfigMap")
    assert spec["volumes"][1]["configMap"]["name"] == configmap["metadata"]["name"]
    # Classic: the include leaves `initContainers:` empty, which the API server reads as
    # none; the offline validator wants the key gone.
    if not spec["initContainers"]:
        del spec["initContainers"]
    path = tmp_path / "out.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    done = run("kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES[1], path, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_fleet_gets_its_redis_section_and_its_password_from_a_secret() -> None:
    manifests = render(CHART / "ci" / "fleet-values.yaml")
    text = policy_file(manifests)
    assert yaml.safe_load(text)["redis"] == {
        "url": "redis://fender@redis.infra.svc:6379/0",
        "password": "${file:/var/run/secrets/fender-redis/password}",  # read from the mount
        "timeout": "25ms",
        "prefix": "fender",
        "fleet": "shop",
    }
    spec = pod_spec(manifests)
    volume = next(v for v in spec["volumes"] if v["name"] == "fender-redis")
    assert volume["secret"] == {
        "secretName": "redis-fender",
        "items": [{"key": "password", "path": "password"}],
    }
    mounts = {m["name"]: m for m in fender_container(spec)["volumeMounts"]}
    assert mounts["fender-redis"] == {
        "name": "fender-redis",
        "mountPath": "/var/run/secrets/fender-redis",
        "readOnly": True,
    }
    # Without a url, no redis section and no such volume.
    plain = render()
    assert "redis" not in yaml.safe_load(policy_file(plain))
    assert not [v for v in pod_spec(plain)["volumes"] if v["name"] == "fender-redis"]


def queue_volume(spec: dict[str, Any]) -> dict[str, Any]:
    (volume,) = [v for v in spec["volumes"] if v["name"] == "fender-queues"]
    return volume


def test_queues_live_on_an_empty_dir_mounted_writable_by_default() -> None:
    manifests = render()
    spec = pod_spec(manifests)
    assert queue_volume(spec) == {"name": "fender-queues", "emptyDir": {"sizeLimit": "1Gi"}}
    mounts = fender_container(spec)["volumeMounts"]
    assert {"name": "fender-queues", "mountPath": "/var/lib/fender"} in mounts  # not read-only
    assert "strategy" not in find(manifests, "Deployment")["spec"]
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]


def test_a_claim_keeps_what_waits_in_the_queues_when_the_pod_goes() -> None:
    manifests = render(CHART / "ci" / "queues-values.yaml")
    claim = find(manifests, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "demo-fender-queues"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "2Gi"}},
    }
    deployment = find(manifests, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one process per file
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["fsGroup"] == 10001  # uid 10001 writes the volume
    assert queue_volume(spec)["persistentVolumeClaim"] == {"claimName": "demo-fender-queues"}
    own = render(
        **{
            "queueStorage.persistentVolumeClaim.enabled": "true",
            "queueStorage.persistentVolumeClaim.existingClaim": "outbox-data",
        }
    )
    assert not [m for m in own if m["kind"] == "PersistentVolumeClaim"]
    assert queue_volume(pod_spec(own))["persistentVolumeClaim"] == {"claimName": "outbox-data"}


def test_notes_say_what_survives_a_pods_deletion(tmp_path: Path) -> None:
    def notes(*values: Path, **sets: str) -> str:
        args: list[str | Path] = ["install", "demo", CHART, "--dry-run=client", "-n", "shop"]
        for path in values:
            args += ["-f", path]
        for key, value in sets.items():
            args += ["--set", f"{key}={value}"]
        out = helm_run(*args).stdout
        return out[out.index("NOTES:") :]

    queues = CHART / "ci" / "queues-values.yaml"
    on_empty_dir = notes(queues, **{"queueStorage.persistentVolumeClaim.enabled": "false"})
    assert "an emptyDir" in on_empty_dir and "NOT a pod's deletion" in on_empty_dir
    on_claim = notes(queues)
    assert "demo-fender-queues: what waits in them survives a pod's deletion" in on_claim
    assert "Durable queues" not in notes()  # a policy without queues says nothing of them
