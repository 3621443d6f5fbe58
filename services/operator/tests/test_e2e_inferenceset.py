"""End to end: the real operator turns an InferenceSet into member Workspaces (served by
the same operator's Workspace controller), a Service across their pods and a KEDA
ScaledObject; scales, rolls and garbage-collects them against the API emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from kaito_operator.builders.inferenceset import ANNOTATION_TEMPLATE_HASH
from kaito_operator_testing import kubelet
from kaito_operator_testing.harness import OperatorHarness

pytestmark = pytest.mark.asyncio
IS = ("kaito.sh/v1beta1", "inferencesets")
WS = ("kaito.sh/v1beta1", "workspaces")
STS = ("apps/v1", "statefulsets")
SCALED = ("keda.sh/v1alpha1", "scaledobjects")
CREATED_BY = "inferenceset.kaito.sh/created-by"
METRICS = "- {name: kaito_inference_requests_waiting, upthreshold: 10, downthreshold: 2}\n"


@pytest.fixture
def operator_settings() -> dict[str, Any]:
    return {"controllers": frozenset({"workspace"})}


def inference_set(name: str, replicas: int, **meta: Any) -> dict[str, Any]:
    """A CPU InferenceSet, written as kaito.sh/v1alpha1 (the operator reads v1beta1)."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "InferenceSet",
        "metadata": {"name": name, "namespace": "default", **meta},
        "spec": {
            "replicas": replicas,
            "labelSelector": {"matchLabels": {"apps": name}},
            "template": {
                "metadata": {"annotations": {"kaito.sh/runtime": "transformers"}},
                "inference": {"preset": {"name": "smollm2-135m-instruct"}},
            },
        },
    }


def members(cluster: OperatorHarness, name: str) -> dict[str, dict[str, Any]]:
    found = cluster.emulator.list_objects(*WS, "default", labels=f"{CREATED_BY}={name}")
    return {m["metadata"]["name"]: m for m in found}


def set_status(cluster: OperatorHarness, name: str) -> dict[str, Any]:
    return dict((cluster.emulator.read_object(*IS, "default", name) or {}).get("status") or {})


def ready_condition(cluster: OperatorHarness, name: str) -> dict[str, Any]:
    for cond in set_status(cluster, name).get("conditions") or []:
        if cond["type"] == "InferenceSetReady":
            return dict(cond)
    return {}


async def serve(
    cluster: OperatorHarness, member: str, *, newer_than: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Play kubelet and StatefulSet controller for one member: its pod runs and is ready
    (with ``newer_than``: once the member's StatefulSet is a later generation than that)."""
    emu = cluster.emulator
    before = newer_than["metadata"]["generation"] if newer_than else 0

    def current() -> dict[str, Any] | None:
        sts = emu.read_object(*STS, "default", member)
        return sts if sts and sts["metadata"]["generation"] > before else None

    sts = await cluster.wait_for(current, message=f"StatefulSet {member}")
    existing = emu.read_object("v1", "pods", "default", f"{member}-0")
    pod = existing or (await kubelet.create_pods(emu, sts, 1, node=f"node-{member}"))[0]
    await kubelet.set_pod_state(emu, pod, ready=True)
    await kubelet.set_workload_ready(emu, sts, 1)
    return pod


async def test_members_service_scaling_and_garbage_collection(
    cluster: OperatorHarness, validate_k8s: Callable[[dict[str, Any]], None]
) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_set("chat", 2))
    both = await cluster.wait_for(
        lambda: (found := members(cluster, "chat")) and len(found) == 2 and found,
        message="two members",
    )
    assert sorted(both) == ["chat-0", "chat-1"]
    owner = emu.read_object(*IS, "default", "chat")
    assert owner is not None
    for member in both.values():
        [ref] = member["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == (
            "InferenceSet",
            owner["metadata"]["uid"],
            True,
        )
        assert member["resource"]["labelSelector"] == {"matchLabels": {"apps": "chat"}}
        assert member["metadata"]["annotations"]["kaito.sh/runtime"] == "transformers"
    service = await cluster.wait_for(
        lambda: emu.read_object("v1", "services", "default", "chat"), message="Service"
    )
    validate_k8s(service)
    status = await cluster.wait_for(
        lambda: (s := set_status(cluster, "chat")).get("replicas") == 2 and s, message="status"
    )
    assert status["readyReplicas"] == 0
    assert status["selector"] == f"{CREATED_BY}=chat"
    assert ready_condition(cluster, "chat")["reason"] == "ReplicasNotReady"

    # The members' Workspace controller serves them; once their pods are ready, so is the set.
    pods = [await serve(cluster, name) for name in ("chat-0", "chat-1")]
    await cluster.wait_for(
        lambda: ready_condition(cluster, "chat").get("status") == "True", message="set ready"
    )
    assert set_status(cluster, "chat")["readyReplicas"] == 2
    for pod in pods:  # the Service's selector picks every member's serving pod
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    # kubectl scale writes spec.replicas: a third member appears, not ready.
    await emu.patch_object(*IS, "default", "chat", {"spec": {"replicas": 3}})
    await cluster.wait_for(lambda: "chat-2" in members(cluster, "chat"), message="chat-2")
    await cluster.wait_for(
        lambda: set_status(cluster, "chat").get("replicas") == 3, message="3 replicas"
    )
    assert ready_condition(cluster, "chat")["status"] == "False"
    # Scaling down to 1 removes the not-ready member first, then the highest index.
    await emu.patch_object(*IS, "default", "chat", {"spec": {"replicas": 1}})
    await cluster.wait_for(
        lambda: sorted(members(cluster, "chat")) == ["chat-0"], message="scaled to 1"
    )
    await cluster.wait_for(
        lambda: ready_condition(cluster, "chat").get("status") == "True", message="ready at 1"
    )
    assert set_status(cluster, "chat")["readyReplicas"] == 1

    await emu.delete_object(*IS, "default", "chat")
    await cluster.wait_for(
        lambda: not members(cluster, "chat") and emu.read_object(*IS, "default", "chat") is None,
        message="garbage collection",
    )
    assert emu.read_object("v1", "services", "default", "chat") is None
    assert emu.read_object(*STS, "default", "chat-0") is None


async def test_rolling_update_rewrites_one_member_at_a_time(cluster: OperatorHarness) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_set("roll", 2))
    await cluster.wait_for(lambda: len(members(cluster, "roll")) == 2, message="members")
    for name in ("roll-0", "roll-1"):
        await serve(cluster, name)
    await cluster.wait_for(
        lambda: ready_condition(cluster, "roll").get("status") == "True", message="ready"
    )
    old = {
        n: m["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
        for n, m in members(cluster, "roll").items()
    }
    assert len(set(old.values())) == 1

    old_sets = {n: emu.read_object(*STS, "default", n) for n in ("roll-0", "roll-1")}
    # A template change that reaches the pods: the member's StatefulSet rolls.
    adapter = [{"source": {"name": "a1", "image": "registry.example.com/a1:1"}}]
    patch = {"spec": {"template": {"inference": {"adapters": adapter}}}}
    await emu.patch_object(*IS, "default", "roll", patch)

    def rewritten() -> list[str]:
        return sorted(
            n
            for n, m in members(cluster, "roll").items()
            if m["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] != old[n]
        )

    first = await cluster.wait_for(rewritten, message="first member rewritten")
    assert first == ["roll-0"]
    await cluster.wait_for(
        lambda: ready_condition(cluster, "roll").get("reason") == "RollingUpdate", message="rolling"
    )
    # roll-0 is not ready on its new generation: roll-1 keeps the old template meanwhile.
    await asyncio.sleep(1.5)
    assert rewritten() == ["roll-0"]
    await serve(cluster, "roll-0", newer_than=old_sets["roll-0"])
    await cluster.wait_for(lambda: rewritten() == ["roll-0", "roll-1"], message="second member")
    await serve(cluster, "roll-1", newer_than=old_sets["roll-1"])
    await cluster.wait_for(
        lambda: ready_condition(cluster, "roll").get("status") == "True", message="rolled"
    )
    for member in members(cluster, "roll").values():
        assert member["inference"]["adapters"] == adapter


async def test_scaledobject_follows_the_annotation_and_requests_fit_the_rbac(
    cluster: OperatorHarness, rbac_violations: Callable[..., list[str]]
) -> None:
    emu = cluster.emulator
    emu.register_resource(*SCALED, "ScaledObject", namespaced=True, status=True)
    annotations = {
        "scaledobject.kaito.sh/metrics": METRICS,
        "scaledobject.kaito.sh/max-replicas": "4",
    }
    await emu.create_object(inference_set("auto", 1, annotations=annotations))
    scaler = await cluster.wait_for(
        lambda: emu.read_object(*SCALED, "default", "auto"), message="ScaledObject"
    )
    assert scaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "name": "auto",
    }
    assert scaler["spec"]["maxReplicaCount"] == 4
    [trigger] = scaler["spec"]["triggers"]
    assert trigger["metadata"]["query"].startswith("sum(kaito_inference_requests_waiting{")
    # KEDA's HPA writes spec.replicas through the scale subresource: the set follows.
    await emu.patch_object(*IS, "default", "auto", {"spec": {"replicas": 2}})
    await cluster.wait_for(lambda: len(members(cluster, "auto")) == 2, message="scaled by KEDA")
    # Without the annotation the ScaledObject goes.
    remove = {"metadata": {"annotations": {"scaledobject.kaito.sh/metrics": None}}}
    await emu.patch_object(*IS, "default", "auto", remove)
    await cluster.wait_for(
        lambda: emu.read_object(*SCALED, "default", "auto") is None, message="ScaledObject gone"
    )
    # A malformed annotation is refused with the field and the rule.
    bad = {"metadata": {"annotations": {"scaledobject.kaito.sh/metrics": "- {name: x}"}}}
    await emu.patch_object(*IS, "default", "auto", bad)
    cond = await cluster.wait_for(
        lambda: (c := ready_condition(cluster, "auto")).get("reason") == "InvalidSpec" and c,
        message="InvalidSpec",
    )
    assert "scaledobject.kaito.sh/metrics" in cond["message"]
    assert "upthreshold" in cond["message"]
    await emu.delete_object(*IS, "default", "auto")
    await cluster.wait_for(lambda: not members(cluster, "auto"), message="members gone")
    assert rbac_violations(cluster, "workspace") == []


async def test_a_change_to_an_immutable_field_replaces_members_one_at_a_time(
    cluster: OperatorHarness,
) -> None:
    emu = cluster.emulator
    await emu.create_object(inference_set("swap", 2))
    await cluster.wait_for(lambda: len(members(cluster, "swap")) == 2, message="members")
    for name in ("swap-0", "swap-1"):
        await serve(cluster, name)
    await cluster.wait_for(
        lambda: ready_condition(cluster, "swap").get("status") == "True", message="ready"
    )
    original_uids = {ws["metadata"]["uid"] for ws in members(cluster, "swap").values()}
    # A Workspace's node selector is fixed at creation: the member is replaced, not edited.
    selector = {"matchLabels": {"apps": "swap", "pool": "b"}}
    await emu.patch_object(*IS, "default", "swap", {"spec": {"labelSelector": selector}})

    def with_new_selector() -> list[str]:
        return sorted(
            name
            for name, ws in members(cluster, "swap").items()
            if ws["resource"]["labelSelector"] == selector
            and not ws["metadata"].get("deletionTimestamp")
        )

    [replacement] = await cluster.wait_for(with_new_selector, message="a replacement")
    assert replacement != "swap-1"
    # A new object (swap-0 again, once the old one is gone, or the next free index).
    assert members(cluster, "swap")[replacement]["metadata"]["uid"] not in original_uids
    # The other member keeps serving until the replacement is ready.
    await asyncio.sleep(1.0)
    assert members(cluster, "swap")["swap-1"]["resource"]["labelSelector"] != selector
    await serve(cluster, replacement)
    await cluster.wait_for(lambda: len(with_new_selector()) == 2, message="second replacement")
    for name in with_new_selector():
        await serve(cluster, name)
    await cluster.wait_for(
        lambda: (
            ready_condition(cluster, "swap").get("status") == "True"
            and len(members(cluster, "swap")) == 2
        ),
        message="replaced",
    )
