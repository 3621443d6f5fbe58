"""InferenceSet builders: golden YAML for members, Service and ScaledObject; the member
plan (scale up, scale down, rolling update) and the status, case by case.

Regenerate the golden files after an intended change with ``KAITO_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.builders import inferenceset as builders
from kaito_operator.builders.inferenceset import Member
from kaito_sdk.api import InferenceSet, Workspace

UID = "11111111-2222-3333-4444-555555555555"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
REV = "current"


def inference_set(
    replicas: int | None = 2, annotations: dict[str, str] | None = None, **spec: Any
) -> InferenceSet:
    meta: dict[str, Any] = {"name": "phi", "namespace": "team", "uid": UID, "generation": 3}
    if annotations:
        meta["annotations"] = annotations
    body: dict[str, Any] = {
        "labelSelector": {"matchLabels": {"apps": "phi"}},
        "template": {
            "metadata": {"labels": {"team": "a"}, "annotations": {"kaito.sh/runtime": "vllm"}},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
        **spec,
    }
    if replicas is not None:
        body["replicas"] = replicas
    return InferenceSet.from_manifest({"metadata": meta, "spec": body})


METRICS = """\
- {name: kaito_inference_requests_waiting, type: AverageValue, upthreshold: 10, downthreshold: 2}
- {name: kaito_inference_requests_running, upthreshold: 8, downthreshold: 4}
"""


def test_members_service_and_scaledobject_match_golden(
    validate_k8s: Callable[[dict[str, Any]], None],
    check_golden: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    annotations = {
        "scaledobject.kaito.sh/metrics": METRICS,
        "scaledobject.kaito.sh/max-replicas": "6",
    }
    iset = inference_set(annotations=annotations)
    revision = builders.template_hash(iset)
    members = [builders.member_manifest(iset, index, revision) for index in (0, 1)]
    service = builders.members_service(iset)
    scaler = builders.scaled_object(iset, runtime="vllm")
    assert scaler is not None
    validate_k8s(service)
    for member in members:
        assert Workspace.from_manifest(member).metadata.owner_references is not None
    check_golden("inferenceset-vllm-autoscaled", [*members, service, scaler])


def test_scaledobject_uses_the_transformers_metric_names_and_no_tolerance_without_a_gap() -> None:
    metrics = "- {name: 'vllm:num_requests_waiting', type: Value, upthreshold: 4}\n"
    iset = inference_set(
        annotations={
            "scaledobject.kaito.sh/metrics": metrics,
            "scaledobject.kaito.sh/min-replicas": "0",
            "scaledobject.kaito.sh/server-address": "http://prom.mon:9090",
        }
    )
    scaler = builders.scaled_object(iset, runtime="transformers")
    assert scaler is not None
    [trigger] = scaler["spec"]["triggers"]
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"] == {
        "serverAddress": "http://prom.mon:9090",
        "query": 'sum(kaito_inference_requests_waiting{namespace="team",pod=~"phi-[0-9]+-0"})',
        "threshold": "4",
    }
    assert (scaler["spec"]["minReplicaCount"], scaler["spec"]["maxReplicaCount"]) == (0, 10)
    assert "advanced" not in scaler["spec"]
    assert builders.scaled_object(inference_set(), runtime="vllm") is None


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"scaledobject.kaito.sh/metrics": "{name: x}"}, "non-empty YAML list"),
        ({"scaledobject.kaito.sh/metrics": "- {name: x, upthreshold: 1, extra: 2}"}, "unknown"),
        ({"scaledobject.kaito.sh/metrics": "- {name: x, type: Rate, upthreshold: 1}"}, "type"),
        (
            {"scaledobject.kaito.sh/metrics": "- {name: x, upthreshold: 1, downthreshold: 3}"},
            "downthreshold <= upthreshold",
        ),
        (
            {
                "scaledobject.kaito.sh/metrics": "- {name: x, upthreshold: 1}",
                "scaledobject.kaito.sh/max-replicas": "many",
            },
            "whole number",
        ),
    ],
)
def test_a_malformed_scaling_annotation_says_what_is_wrong(
    annotations: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        builders.scaled_object(inference_set(annotations=annotations), runtime="vllm")


def test_template_hash_follows_the_template_and_selector_only() -> None:
    base = builders.template_hash(inference_set())
    assert builders.template_hash(inference_set(replicas=5)) == base
    changed = inference_set(labelSelector={"matchLabels": {"apps": "other"}})
    assert builders.template_hash(changed) != base


def member(index: int, *, ready: bool = True, revision: str = REV, nodes: int = 1) -> Member:
    return Member(f"phi-{index}", index, revision, ready, False, nodes)


def test_scale_up_fills_the_lowest_free_indexes() -> None:
    plan = builders.plan_members(inference_set(replicas=4), [member(1), member(3)], REV)
    assert plan.create == (0, 2)
    assert (plan.update, plan.delete, plan.target) == ((), (), 4)


def test_scale_down_removes_not_ready_then_outdated_then_highest_members() -> None:
    members = [member(0), member(1, ready=False), member(2), member(3, revision="old")]
    plan = builders.plan_members(inference_set(replicas=2), members, REV)
    assert plan.delete == ("phi-1", "phi-3")
    assert plan.create == ()
    plan = builders.plan_members(inference_set(replicas=1), members, REV)
    assert plan.delete == ("phi-1", "phi-3", "phi-2")
    plan = builders.plan_members(inference_set(replicas=0), members, REV)
    assert sorted(plan.delete) == ["phi-0", "phi-1", "phi-2", "phi-3"]


def test_rolling_update_rewrites_one_ready_member_at_a_time() -> None:
    members = [member(0, revision="old"), member(1, revision="old"), member(2, revision="old")]
    plan = builders.plan_members(inference_set(replicas=3), members, REV)
    assert plan.update == (0,)
    # The rewritten member is not ready yet: nothing else is touched.
    members[0] = member(0, ready=False)
    assert builders.plan_members(inference_set(replicas=3), members, REV).update == ()
    # Ready again: the next one.
    members[0] = member(0)
    assert builders.plan_members(inference_set(replicas=3), members, REV).update == (1,)


def test_rolling_update_rewrites_outdated_members_that_serve_nothing_at_once() -> None:
    members = [
        member(0, revision="old", ready=False),
        member(1, revision="old", ready=False),
        member(2, revision="old"),
    ]
    plan = builders.plan_members(inference_set(replicas=3), members, REV)
    assert plan.update == (0, 1)


def test_max_unavailable_widens_the_rollout() -> None:
    members = [member(i, revision="old") for i in range(4)]
    iset = inference_set(replicas=4, updateStrategy={"rollingUpdate": {"maxUnavailable": 2}})
    assert builders.plan_members(iset, members, REV).update == (0, 1)


def test_node_count_limit_caps_the_replicas() -> None:
    iset = inference_set(replicas=4, nodeCountLimit=5)
    plan = builders.plan_members(iset, [member(0, nodes=2)], REV)
    assert (plan.target, plan.create) == (2, (1,))
    status = builders.inferenceset_status(iset, [member(0, nodes=2)], REV, plan, now=NOW)
    [cond] = status.conditions or []
    assert (cond.status, cond.reason) == ("False", "NodeCountLimitReached")
    assert "allows 2 of 4 replicas" in cond.message


@pytest.mark.parametrize(
    ("members", "replicas", "ok", "reason"),
    [
        ([member(0), member(1)], 2, "True", "InferenceSetReady"),
        ([member(0), member(1, ready=False)], 2, "False", "ReplicasNotReady"),
        ([member(0), member(1, revision="old")], 2, "False", "RollingUpdate"),
        ([member(0)], 2, "False", "ReplicasNotReady"),
        ([], 0, "True", "InferenceSetReady"),
    ],
)
def test_status_counts_members_and_says_why_not_ready(
    members: list[Member], replicas: int, ok: str, reason: str
) -> None:
    iset = inference_set(replicas=replicas)
    plan = builders.plan_members(iset, members, REV)
    status = builders.inferenceset_status(iset, members, REV, plan, now=NOW)
    assert status.replicas == len(members)
    assert status.ready_replicas == sum(m.ready for m in members)
    assert status.selector == "inferenceset.kaito.sh/created-by=phi"
    [cond] = status.conditions or []
    assert (cond.type, cond.status, cond.reason) == ("InferenceSetReady", ok, reason)
    assert cond.observed_generation == 3


def test_member_from_reads_readiness_for_the_current_generation_only() -> None:
    iset = inference_set()
    workspace: dict[str, Any] = {
        "metadata": {
            "name": "phi-7",
            "generation": 2,
            "annotations": {builders.ANNOTATION_TEMPLATE_HASH: "h"},
        },
        "status": {
            "targetNodeCount": 2,
            "conditions": [{"type": "InferenceReady", "status": "True", "observedGeneration": 1}],
        },
    }
    parsed = builders.member_from(iset, workspace)
    assert parsed == Member("phi-7", 7, "h", False, False, 2)
    workspace["status"]["conditions"][0]["observedGeneration"] = 2
    parsed = builders.member_from(iset, workspace)
    assert parsed is not None
    assert parsed.ready
    assert builders.member_from(iset, {"metadata": {"name": "phi-x"}}) is None
    assert builders.member_from(iset, {"metadata": {"name": "phi-07"}}) is None
    assert builders.member_from(iset, {"metadata": {"name": "other-1"}}) is None


def test_kaito_render_shows_what_the_example_inferenceset_becomes(repo_root: Path) -> None:
    from kaito_operator.render import render_manifests  # noqa: PLC0415 (CLI module)
    from kaito_operator.settings import OperatorSettings  # noqa: PLC0415

    example = repo_root / "examples" / "inferenceset-smollm2-cpu.yaml"
    objects = render_manifests(list(yaml.safe_load_all(example.read_text())), OperatorSettings())
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds[:2] == [
        ("Service", "inferenceset-smollm2"),
        ("ScaledObject", "inferenceset-smollm2"),
    ]
    members = [name for kind, name in kinds if kind == "Workspace"]
    assert members == ["inferenceset-smollm2-0", "inferenceset-smollm2-1"]
    statefulsets = [o for o in objects if o["kind"] == "StatefulSet"]
    assert [s["metadata"]["name"] for s in statefulsets] == members
    for statefulset in statefulsets:
        pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["inferenceset.kaito.sh/created-by"] == "inferenceset-smollm2"
