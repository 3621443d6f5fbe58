"""The InferenceSet kind: model, member Workspaces, CRD (scale subresource) and admission."""

from __future__ import annotations

from typing import Any

import pytest

from kaito_sdk import labels
from kaito_sdk.api import (
    InferenceSet,
    PartitionSpec,
    ResourceSpec,
    Workspace,
    parse_manifest,
)
from kaito_sdk.api.inferenceset import (
    ScalingMetric,
    member_name,
    member_workspace,
    scaling_bounds,
    scaling_metrics,
)
from kaito_sdk.crd import build_crd
from kaito_sdk.validation import validate, validate_manifest, validate_update

Manifest = dict[str, Any]


def _manifest(**spec: Any) -> Manifest:
    base: Manifest = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "metadata": {"name": "phi-set", "namespace": "team-a"},
        "spec": {
            "replicas": 2,
            "labelSelector": {"matchLabels": {"apps": "phi"}},
            "template": {
                "metadata": {
                    "labels": {"team": "a"},
                    "annotations": {"kaito.sh/runtime": "vllm"},
                },
                "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                "inference": {"preset": {"name": "phi-4-mini-instruct"}},
            },
        },
    }
    base["spec"].update(spec)
    return base


def test_a_kaito_manifest_round_trips_with_every_field() -> None:
    manifest = _manifest(
        nodeCountLimit=4,
        updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        autoUpgrade={
            "enabled": True,
            "strategy": "Surge",
            "maintenanceWindow": {"schedule": "0 2 * * 6", "duration": "4h"},
        },
    )
    manifest["status"] = {
        "replicas": 2,
        "readyReplicas": 1,
        "selector": "inferenceset.kaito.sh/created-by=phi-set",
        "conditions": [
            {
                "type": "InferenceSetReady",
                "status": "False",
                "reason": "ReplicasNotReady",
                "message": "1 of 2 replicas ready",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
            }
        ],
    }
    obj = parse_manifest(manifest)
    assert isinstance(obj, InferenceSet)
    assert obj.spec.node_count_limit == 4
    assert obj.spec.auto_upgrade is not None
    assert obj.spec.auto_upgrade.strategy == "Surge"
    assert obj.status is not None
    assert obj.status.ready_replicas == 1
    assert obj.to_manifest() == manifest


def test_replicas_default_to_one() -> None:
    manifest = _manifest()
    del manifest["spec"]["replicas"]
    assert InferenceSet.from_manifest(manifest).desired_replicas == 1
    assert InferenceSet.from_manifest(_manifest(replicas=0)).desired_replicas == 0


def test_member_workspace_is_the_template_with_the_sets_selector_and_label() -> None:
    inference_set = InferenceSet.from_manifest(_manifest())
    member = member_workspace(inference_set, 1)
    assert isinstance(member, Workspace)
    assert member_name(inference_set, 1) == member.metadata.name == "phi-set-1"
    assert member.metadata.namespace == "team-a"
    assert member.metadata.labels == {
        "team": "a",
        labels.LABEL_INFERENCESET_CREATED_BY: "phi-set",
    }
    assert member.metadata.annotations == {"kaito.sh/runtime": "vllm"}
    assert member.resource == ResourceSpec(
        instance_type="Standard_NC24ads_A100_v4",
        label_selector=inference_set.spec.label_selector,
    )
    assert member.inference == inference_set.spec.template.inference
    # Deep copies: changing the member leaves the set alone.
    assert member.inference is not None
    assert member.inference.preset is not None
    member.inference.preset.name = "other"
    assert inference_set.spec.template.inference.preset is not None
    assert inference_set.spec.template.inference.preset.name == "phi-4-mini-instruct"
    assert validate(member_workspace(inference_set, 0)) == []


def test_crd_has_the_scale_subresource_and_kaito_names() -> None:
    crd = build_crd(InferenceSet)
    assert crd["metadata"]["name"] == "inferencesets.kaito.sh"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "InferenceSet",
        "inferencesets",
        ["is", "isets"],
    )
    assert names["categories"] == ["inferenceset"]
    for version in crd["spec"]["versions"]:
        assert version["subresources"] == {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        }
        spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert spec_schema["required"] == ["template", "labelSelector"]
        assert spec_schema["properties"]["replicas"]["minimum"] == 0
        assert spec_schema["properties"]["updateStrategy"]["x-kubernetes-preserve-unknown-fields"]


def test_a_valid_inferenceset_passes_in_both_versions() -> None:
    assert validate_manifest(_manifest()) == []
    assert validate_manifest({**_manifest(), "apiVersion": "kaito.sh/v1alpha1"}) == []


@pytest.mark.parametrize(
    ("patch", "path", "message"),
    [
        ({"replicas": -1}, "spec.replicas", "must be at least 0, got -1"),
        ({"nodeCountLimit": -2}, "spec.nodeCountLimit", "must be at least 0"),
        (
            {"labelSelector": {"matchLabels": {"kaito.sh/workspace": "x"}}},
            "spec.labelSelector",
            "selects only on labels KAITO reserves",
        ),
        (
            {
                "labelSelector": {
                    "matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["b"]}]
                }
            },
            "spec.labelSelector.matchExpressions[0].operator",
            "only 'In' is allowed",
        ),
        (
            {
                "template": {
                    "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
                    "inference": {"preset": {"name": "no-such-model"}},
                }
            },
            "spec.template.inference.preset.name",
            "unknown preset 'no-such-model'",
        ),
        (
            {
                "template": {
                    "resource": {"instanceType": "not-a-sku"},
                    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
                }
            },
            "spec.template.resource.instanceType",
            "'not-a-sku' is not in the GPU SKU catalog",
        ),
        (
            {
                "template": {
                    "metadata": {"annotations": {"kaito.sh/runtime": "tgi"}},
                    "inference": {"preset": {"name": "phi-4-mini-instruct"}},
                }
            },
            "spec.template.metadata.annotations[kaito.sh/runtime]",
            "'tgi' is not one of vllm, transformers",
        ),
        (
            {"updateStrategy": {"type": "OnDelete"}},
            "spec.updateStrategy.type",
            "only 'RollingUpdate' is supported",
        ),
        (
            {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}},
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            "at least 1",
        ),
        (
            {"autoUpgrade": {"maintenanceWindow": {"schedule": "0 2 * *"}}},
            "spec.autoUpgrade.maintenanceWindow.schedule",
            "5-field cron",
        ),
        (
            {"autoUpgrade": {"maintenanceWindow": {"schedule": "0 2 * * 6", "duration": "0h"}}},
            "spec.autoUpgrade.maintenanceWindow.duration",
            "positive duration",
        ),
        ({"labelSelector": None}, "spec.labelSelector", "is required"),
    ],
)
def test_invalid_inferencesets_name_the_field_and_the_rule(
    patch: dict[str, Any], path: str, message: str
) -> None:
    manifest = _manifest()
    for key, value in patch.items():
        if value is None:
            del manifest["spec"][key]
        else:
            manifest["spec"][key] = value
    errors = validate_manifest(manifest)
    assert [e.path for e in errors] == [path], errors
    assert message in errors[0].message


def test_member_names_must_stay_dns_labels() -> None:
    manifest = _manifest(replicas=100)
    manifest["metadata"]["name"] = "a" * 61
    (error,) = validate_manifest(manifest)
    assert error.path == "metadata.name"
    assert "longer than 63 characters" in error.message
    manifest["spec"]["replicas"] = 10
    assert validate_manifest(manifest) == []


def test_partition_is_immutable() -> None:
    manifest = _manifest()
    del manifest["spec"]["template"]["resource"]["instanceType"]
    old = InferenceSet.from_manifest(manifest)
    new = old.model_copy(deep=True)
    assert new.spec.template.resource is not None
    new.spec.template.resource.partition = PartitionSpec(mode="accelerator", count=1)
    assert [e.path for e in validate_update(old, new)] == ["spec.template.resource.partition"]
    assert validate_update(old, old.model_copy(deep=True)) == []


def test_scaling_annotations_are_checked_at_admission() -> None:
    manifest = _manifest()
    manifest["metadata"]["annotations"] = {
        "scaledobject.kaito.sh/metrics": (
            "- {name: kaito_inference_requests_waiting, upthreshold: 10, downthreshold: 2}"
        ),
        "scaledobject.kaito.sh/min-replicas": "0",
        "scaledobject.kaito.sh/max-replicas": "5",
    }
    assert validate_manifest(manifest) == []
    obj = InferenceSet.from_manifest(manifest)
    [metric] = scaling_metrics(obj)
    assert metric == ScalingMetric("kaito_inference_requests_waiting", "AverageValue", 10, 2)
    assert scaling_bounds(obj) == (0, 5)
    manifest["metadata"]["annotations"]["scaledobject.kaito.sh/metrics"] = "- name: [oops"
    (error,) = validate_manifest(manifest)
    assert error.path == "metadata.annotations[scaledobject.kaito.sh/metrics]"
    assert "not valid YAML" in error.message
    manifest["metadata"]["annotations"]["scaledobject.kaito.sh/metrics"] = (
        "- {name: x, upthreshold: 1}"
    )
    manifest["metadata"]["annotations"]["scaledobject.kaito.sh/max-replicas"] = "0"
    (error,) = validate_manifest(manifest)
    assert error.path == "metadata.annotations"
    assert "max-replicas (0) must be at least" in error.message
