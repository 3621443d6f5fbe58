"""RBAC is least privilege: the chart grants exactly what the operator uses.

The operator keeps the one list of the API calls it makes in ``kaito_operator.rbac``;
these tests compare the rendered ClusterRole of each chart (and each node provisioner)
with that list, so a permission the code stops using, or starts using, fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from kaito_operator.rbac import rules_for
from kaito_operator.settings import OperatorSettings

RELEASE = "acme-kaito"
NAMESPACE = "ml-platform"
PROVISIONERS = ("karpenter", "gpu-provisioner", "byo")
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def cluster_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [role] = [o for o in objects if o["kind"] == "ClusterRole"]
    return role


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """Rules flattened to (apiGroup, resource, verb, resourceNames) grants."""
    return {
        (group, resource, verb, tuple(sorted(rule.get("resourceNames", []))))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


CASES = [("kaito-workspace", {"nodeProvisioner": p}) for p in PROVISIONERS] + [
    ("kaito-ragengine", {})
]
CASE_IDS = [f"{chart}-{values.get('nodeProvisioner', 'default')}" for chart, values in CASES]


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_no_wildcards_and_no_secret_reads(render: Any, chart: str, values: dict[str, str]) -> None:
    for group, resource, verb, _ in grants(cluster_role(render(chart, values=values))["rules"]):
        assert "*" not in (group, resource, verb)
        assert verb not in {"escalate", "bind", "impersonate"}
        assert resource != "secrets" or verb not in {"get", "list", "watch"}, (
            "the operator passes secrets by reference; it must not read them"
        )


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_binding_grants_the_role_to_the_operator_only(
    render: Any, chart: str, values: dict[str, str]
) -> None:
    objects = render(chart, values=values)
    role = cluster_role(objects)
    [binding] = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]


def test_only_the_chosen_provisioner_api_is_granted(render: Any) -> None:
    by_provisioner = {
        p: {
            (group, resource)
            for group, resource, verb, _ in grants(
                cluster_role(render("kaito-workspace", values={"nodeProvisioner": p}))["rules"]
            )
            if verb in WRITE_VERBS
        }
        for p in PROVISIONERS
    }
    assert ("karpenter.sh", "nodepools") in by_provisioner["karpenter"]
    assert ("karpenter.sh", "nodeclaims") in by_provisioner["gpu-provisioner"]
    assert not {g for g, _ in by_provisioner["byo"]} & {"karpenter.sh"}
    assert ("karpenter.sh", "nodeclaims") not in by_provisioner["karpenter"]
    assert ("karpenter.sh", "nodepools") not in by_provisioner["gpu-provisioner"]


@pytest.mark.parametrize(("chart", "values"), CASES, ids=CASE_IDS)
def test_rules_equal_what_the_operator_uses(
    render: Any, chart: str, values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(chart, values=values)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var["value"] for var in container["env"] if "value" in var}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    [controller] = settings.controllers
    expected = grants(rules_for(controller, settings.node_provisioner))
    rendered = grants(cluster_role(objects)["rules"])
    assert rendered - expected == set(), "granted but never used by the operator"
    assert expected - rendered == set(), "used by the operator but not granted"
