"""Checks every chart must pass, for the default values and each provisioner setting.

Each case is rendered with a non-default release name and namespace. Every rendered
object (the CRDs included) is validated against the real Kubernetes schemas with
``kubernetes-validate`` in strict mode.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

CHARTS = Path(__file__).resolve().parents[2] / "charts"
RELEASE = "acme-kaito"
NAMESPACE = "ml-platform"
#: The oldest and newest schemas kubernetes-validate has (1.25, 1.37). The oldest version
#: the charts support (Chart.yaml kubeVersion) is 1.20: tests/k8s installs them there.
KUBE_VERSIONS = ("1.25", "1.37")

#: (chart, --set values) for every supported configuration.
CASES: list[tuple[str, dict[str, str]]] = [
    ("kaito-workspace", {}),
    ("kaito-workspace", {"nodeProvisioner": "karpenter"}),
    ("kaito-workspace", {"nodeProvisioner": "gpu-provisioner"}),
    ("kaito-workspace", {"nodeProvisioner": "byo"}),
    ("kaito-workspace", {"webhook.enabled": "false", "defaultConfigMaps.enabled": "false"}),
    ("kaito-workspace", {"serviceAccount.create": "false", "serviceAccount.name": "kaito-sa"}),
    ("kaito-ragengine", {}),
    ("kaito-ragengine", {"webhook.enabled": "false"}),
]
CASE_IDS = [chart + "".join(f"-{k}={v}" for k, v in values.items()) for chart, values in CASES]
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) for every object that runs pods."""
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in POD_KINDS
    ]


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_helm_lint_strict(lint: Any, chart: str, values: dict[str, str]) -> None:
    output = lint(chart, values=values)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates(
    render: Any, chart: str, values: dict[str, str], kube_version: str
) -> None:
    objects = render(chart, values=values)
    assert objects
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{chart}: {name} is invalid for Kubernetes {kube_version}: {error}")


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_names_follow_release_and_namespace(
    render: Any, chart: str, values: dict[str, str]
) -> None:
    default_params = {"inference-params-template", "lora-params-template", "qlora-params-template"}
    for obj in render(chart, values=values):
        meta = obj["metadata"]
        name = f"{obj['kind']}/{meta['name']}"
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, name
            if obj["kind"] != "CustomResourceDefinition":
                assert meta["name"].startswith(f"{NAMESPACE}-{RELEASE}"), name
        else:
            assert meta.get("namespace") == NAMESPACE, name
            if meta["name"] not in default_params:
                assert meta["name"].startswith(RELEASE), name
        if obj["kind"] != "CustomResourceDefinition":
            assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, name


@pytest.mark.parametrize("chart", ["kaito-workspace", "kaito-ragengine"])
def test_two_releases_never_collide(render: Any, chart: str) -> None:
    """Same release name in two namespaces: no cluster-scoped object is shared."""
    first = render(chart, namespace="team-a")
    second = render(chart, namespace="team-b")

    def cluster_names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {
            (o["kind"], o["metadata"]["name"])
            for o in objects
            if o["kind"] in CLUSTER_SCOPED and o["kind"] != "CustomResourceDefinition"
        }

    assert cluster_names(first)
    assert not cluster_names(first) & cluster_names(second)


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_pods_are_locked_down(render: Any, chart: str, values: dict[str, str]) -> None:
    specs = pod_specs(render(chart, values=values))
    assert specs, "the chart runs no pods"
    for name, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("runAsUser", 0) != 0, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert not spec.get("hostNetwork"), name
        assert not spec.get("hostPID"), name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert not any("hostPath" in v for v in volumes.values()), name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name} container {container['name']}"
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{where} {bound}"
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


@pytest.mark.parametrize(
    ("chart", "key", "value"),
    [
        ("kaito-workspace", "nodeProvisioner", "azure-gpu-provisioner"),
        ("kaito-workspace", "images.pullPolicy", "Sometimes"),
        ("kaito-workspace", "webhook.port", "80"),
        ("kaito-workspace", "replicaCount", "2"),
        ("kaito-workspace", "nodeProvisoner", "karpenter"),
        ("kaito-ragengine", "images.inference", "kaito-inference"),
        ("kaito-ragengine", "healthPort", "0"),
    ],
)
def test_schema_rejects_bad_values(helm: Path, chart: str, key: str, value: str) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHARTS / chart), "--set", f"{key}={value}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stdout + result.stderr


@pytest.mark.parametrize("chart", ["kaito-workspace", "kaito-ragengine"])
def test_clusters_older_than_1_20_are_refused(helm: Path, render: Any, chart: str) -> None:
    assert render(chart, extra=["--kube-version", "1.20.0"])
    result = subprocess.run(
        [str(helm), "template", "x", str(CHARTS / chart), "--kube-version", "1.19.9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr
