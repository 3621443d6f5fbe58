"""An InferenceSet on a real control plane (Kubernetes 1.20), the operator as the chart's
ServiceAccount: written as kaito.sh/v1alpha1 and read as v1beta1 (conversion None),
admitted by the operator's webhook, scaled through the real ``scale`` subresource
(``kubectl scale``), its Service's Endpoints filled by the real endpoints controller with
every member's pod, and its members collected by the real garbage collector.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

CREATED_BY = "inferenceset.kaito.sh/created-by"
WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


def inference_set(name: str, namespace: str, preset: str = "smollm2-135m-instruct") -> str:
    """The manifest as kubectl gets it (v1alpha1, two replicas, CPU preset)."""
    return json.dumps(
        {
            "apiVersion": "kaito.sh/v1alpha1",
            "kind": "InferenceSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 2,
                "labelSelector": {"matchLabels": {"apps": name}},
                "template": {
                    "metadata": {"annotations": {"kaito.sh/runtime": "transformers"}},
                    "inference": {"preset": {"name": preset}},
                },
            },
        }
    )


@pytest.fixture
def inferenceset_webhook(operator: Any, cluster: Any) -> None:
    """Point ``validation.inferenceset.kaito.sh`` at the local operator's webhook, as
    the conftest does for the Workspace webhook (no pod network reaches the Service)."""
    for config in cluster.get(WEBHOOKS)["items"]:
        names = [hook["name"] for hook in config["webhooks"]]
        if "validation.inferenceset.kaito.sh" not in names:
            continue
        workspace = config["webhooks"][names.index("validation.workspace.kaito.sh")]
        base = workspace["clientConfig"]["url"].rsplit("/", 1)[0]
        patch = [
            {
                "op": "replace",
                "path": f"/webhooks/{names.index('validation.inferenceset.kaito.sh')}/clientConfig",
                "value": {
                    "url": f"{base}/validate-inferenceset",
                    "caBundle": workspace["clientConfig"]["caBundle"],
                },
            }
        ]
        cluster.send(
            "PATCH",
            f"{WEBHOOKS}/{config['metadata']['name']}",
            patch,
            content_type="application/json-patch+json",
        )
        return
    pytest.fail("the workspace chart rendered no validation.inferenceset.kaito.sh webhook")


def members(cluster: Any, namespace: str, name: str) -> list[str]:
    """Names of the member Workspaces that are not being deleted."""
    path = f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces"
    items = (cluster.get(f"{path}?labelSelector={CREATED_BY}={name}") or {}).get("items", [])
    return sorted(
        ws["metadata"]["name"] for ws in items if not ws["metadata"].get("deletionTimestamp")
    )


@pytest.mark.usefixtures("inferenceset_webhook")
def test_inferenceset_scales_serves_and_is_collected(
    operator: Any, cluster: Any, node: Any, namespace: str, eventually: Any
) -> None:
    refused = cluster.apply(inference_set("bad", namespace, preset="no-such-model"))
    assert refused.returncode != 0
    assert "spec.template.inference.preset.name" in refused.stderr
    assert "no-such-model" in refused.stderr

    name = "chat"
    node.register({"apps": name})
    applied = cluster.apply(inference_set(name, namespace))
    assert applied.returncode == 0, applied.stderr
    beta = f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/inferencesets/{name}"
    alpha = f"/apis/kaito.sh/v1alpha1/namespaces/{namespace}/inferencesets/{name}"
    stored = cluster.get(beta)
    assert stored["apiVersion"] == "kaito.sh/v1beta1"
    assert cluster.get(alpha)["spec"] == stored["spec"]

    eventually(lambda: members(cluster, namespace, name) == ["chat-0", "chat-1"], what="members")
    scale = eventually(
        lambda: (s := cluster.get(f"{beta}/scale")) and s["status"].get("replicas") == 2 and s,
        what="the scale subresource's status",
    )
    assert scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == f"{CREATED_BY}={name}"

    scaled = cluster.kubectl("scale", "inferenceset", name, "-n", namespace, "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    eventually(lambda: len(members(cluster, namespace, name)) == 3, what="a third member")
    for number, member in enumerate(("chat-0", "chat-1", "chat-2")):
        pod = node.bound_pod(namespace, f"kaito.sh/workspace={member}")
        node.run(pod)
        # A pod network address of its own (Endpoints refuse the agent's loopback one).
        address = f"10.244.0.{10 + number}"
        cluster.send(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
            {"status": {"podIP": address, "podIPs": [{"ip": address}]}},
            content_type="application/merge-patch+json",
        )

    def ready() -> dict[str, Any] | None:
        status = (cluster.get(beta) or {}).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        ok = conditions.get("InferenceSetReady", {}).get("status") == "True"
        return status if ok and status.get("readyReplicas") == 3 else None

    eventually(ready, within=90, what="three ready replicas")

    def endpoints() -> list[str]:
        found = cluster.get(f"/api/v1/namespaces/{namespace}/endpoints/{name}") or {}
        return sorted(
            address["targetRef"]["name"]
            for subset in found.get("subsets") or []
            for address in subset.get("addresses") or []
        )

    # The real endpoints controller: the set's Service reaches every member's pod.
    eventually(lambda: endpoints() == ["chat-0-0", "chat-1-0", "chat-2-0"], what="endpoints")

    deleted = cluster.kubectl("delete", "inferenceset", name, "-n", namespace, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr
    eventually(lambda: cluster.get(beta) is None, what="the InferenceSet gone")
    eventually(lambda: not members(cluster, namespace, name), within=90, what="members collected")
    service = f"/api/v1/namespaces/{namespace}/services/{name}"
    eventually(lambda: cluster.get(service) is None, what="the Service collected")
    assert operator.rbac_denials() == []
