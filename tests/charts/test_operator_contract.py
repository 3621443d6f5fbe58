"""The charts configure the operator the way the operator reads its configuration.

Every ``KAITO_OPERATOR_*`` variable a chart sets must be a field of
``kaito_operator.settings.OperatorSettings`` (pydantic-settings would silently ignore a
misspelt one), and the settings parsed from the rendered environment must point at the
objects the chart really renders (webhook Service, health port, namespace).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from kaito_operator.settings import OperatorSettings
from kaito_sdk.images import IMAGE_REGISTRY, IMAGE_TAG, image_for

RELEASE = "acme-kaito"
NAMESPACE = "ml-platform"
PREFIX = "KAITO_OPERATOR_"
CASES: list[tuple[str, dict[str, str]]] = [
    ("kaito-workspace", {}),
    ("kaito-workspace", {"nodeProvisioner": "karpenter"}),
    ("kaito-workspace", {"nodeProvisioner": "gpu-provisioner"}),
    ("kaito-workspace", {"webhook.enabled": "false"}),
    ("kaito-ragengine", {}),
    ("kaito-ragengine", {"webhook.enabled": "false"}),
]
CASE_IDS = [chart + "".join(f"-{k}={v}" for k, v in values.items()) for chart, values in CASES]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    [container] = containers
    return container


def operator_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's KAITO_OPERATOR_* variables, downward-API references resolved."""
    env = {}
    for var in container["env"]:
        if not var["name"].startswith(PREFIX):
            continue
        if "valueFrom" in var:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
            env[var["name"]] = NAMESPACE
        else:
            env[var["name"]] = var["value"]
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return OperatorSettings()


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_every_variable_is_an_operator_setting(
    render: Any, chart: str, values: dict[str, str]
) -> None:
    env = operator_env(operator_container(render(chart, values=values)))
    fields = {PREFIX + name.upper() for name in OperatorSettings.model_fields}
    unknown = sorted(set(env) - fields)
    assert not unknown, f"{chart} sets variables the operator never reads: {unknown}"


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_settings_point_at_the_rendered_objects(
    render: Any, chart: str, values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(chart, values=values)
    container = operator_container(objects)
    settings = settings_from(operator_env(container), monkeypatch)

    assert settings.release_namespace == NAMESPACE
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert settings.health_port == ports["health"]
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    webhook_on = values.get("webhook.enabled", "true") == "true"
    assert settings.webhook_enabled is webhook_on
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    if webhook_on:
        assert settings.webhook_port == ports["webhook"]
        service = services[settings.webhook_service]
        [service_port] = service["spec"]["ports"]
        assert service_port["targetPort"] == "webhook"
        assert service_port["port"] == settings.webhook_port
        pod_labels = objects_pod_labels(objects)
        assert service["spec"]["selector"].items() <= pod_labels.items()
        configurations = {
            o["metadata"]["name"] for o in objects if o["kind"] == "ValidatingWebhookConfiguration"
        }
        assert settings.webhook_configuration in configurations
    else:
        assert "webhook" not in ports
        assert not services


def objects_pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("provisioner", ["karpenter", "gpu-provisioner", "byo"])
def test_workspace_chart_passes_the_node_provisioner(
    render: Any, provisioner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render("kaito-workspace", values={"nodeProvisioner": provisioner})
    container = operator_container(objects)
    settings = settings_from(operator_env(container), monkeypatch)
    assert settings.node_provisioner == provisioner


@pytest.mark.parametrize(
    ("chart", "workloads"),
    [("kaito-workspace", ("inference", "tuning")), ("kaito-ragengine", ("ragengine",))],
)
@pytest.mark.parametrize(
    "images",
    [{}, {"images.registry": "registry.example.com/mirror", "images.tag": "0.1.0-rc1"}],
    ids=["default", "mirror"],
)
def test_workload_images_follow_the_chart_images(
    render: Any,
    chart: str,
    workloads: tuple[str, ...],
    images: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator builds workload images from the chart's registry and tag."""
    objects = render(chart, values=images)
    container = operator_container(objects)
    settings = settings_from(operator_env(container), monkeypatch)
    registry = images.get("images.registry", IMAGE_REGISTRY)
    tag = images.get("images.tag", IMAGE_TAG)
    assert container["image"] == image_for("operator", registry=registry, tag=tag)
    for service in workloads:
        expected = image_for(service, registry=registry, tag=tag)
        assert image_for(service, registry=settings.image_registry, tag=settings.image_tag) == (
            expected
        )


@pytest.mark.parametrize("provisioner", ["karpenter", "gpu-provisioner"])
def test_node_class_reaches_the_operator(
    render: Any, provisioner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "nodeProvisioner": provisioner,
        "nodeClass.group": "karpenter.k8s.aws",
        "nodeClass.kind": "EC2NodeClass",
        "nodeClass.name": "gpu",
    }
    container = operator_container(render("kaito-workspace", values=values))
    settings = settings_from(operator_env(container), monkeypatch)
    assert settings.karpenter_node_class_group == "karpenter.k8s.aws"
    assert settings.karpenter_node_class_kind == "EC2NodeClass"
    assert settings.karpenter_node_class_name == "gpu"
