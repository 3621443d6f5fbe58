"""The operator's API layer (``kaito_operator.kube`` on lightkube) against a real
kube-apiserver (Kubernetes 1.20): server-side apply as ``kaito-operator`` in the managed
fields and taking a field back from another manager with force; refusals as KubeApiError
with the apiserver's reason and message; the chart's RBAC as the chart's ServiceAccount;
a rotated token file picked up after the old token is revoked.

Clients are built the way the operator builds its own: kopf's login from a kubeconfig
(TLS with the cluster CA), then ``KubeClient.from_kopf``.
"""

from __future__ import annotations

import base64
import urllib.error
from pathlib import Path
from typing import Any

import kopf
import pytest

from kaito_operator.kube import FIELD_MANAGER, KubeApiError, KubeClient

pytestmark = [pytest.mark.k8s, pytest.mark.asyncio]

NAMESPACE = "kaito-system"  # both chart releases (tests/k8s/conftest.py)


def client_for(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> KubeClient:
    """A KubeClient from kopf's kubeconfig login, as the operator makes one."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    assert info is not None
    return KubeClient.from_kopf(info, **options)


def config_map(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"layer": "kube"}},
        "data": data,
    }


def owners_of(obj: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """(manager, operation) of the managed-fields entries that own ``data.<key>``."""
    return [
        (entry["manager"], entry["operation"])
        for entry in obj["metadata"]["managedFields"]
        if f"f:{key}" in (entry.get("fieldsV1") or {}).get("f:data", {})
    ]


async def test_server_side_apply_and_refusals_on_a_real_apiserver(
    cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = client_for(cluster.local.kubeconfig, monkeypatch)
    try:
        version = await kube.server_version()
        assert version is not None
        assert version["gitVersion"].startswith("v1.20.")

        first = await kube.apply(config_map(namespace, "cm", a="1"))
        assert owners_of(first, "a") == [(FIELD_MANAGER, "Apply")]
        again = await kube.apply(config_map(namespace, "cm", a="1"))
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

        # Another field manager takes data.a; the operator's forced apply takes it back.
        theirs = config_map(namespace, "cm", a="2")
        done = cluster.apply(theirs, "--server-side", "--force-conflicts", "--field-manager=other")
        assert done.returncode == 0, done.stderr
        taken = await kube.get("v1", "ConfigMap", "cm", namespace)
        assert taken is not None
        assert owners_of(taken, "a") == [("other", "Apply")]
        back = await kube.apply(config_map(namespace, "cm", a="1"))
        assert back["data"] == {"a": "1"}
        assert owners_of(back, "a") == [(FIELD_MANAGER, "Apply")]

        listed = await kube.list("v1", "ConfigMap", namespace, labels={"layer": "kube"})
        assert [o["metadata"]["name"] for o in listed] == ["cm"]
        everywhere = await kube.list("v1", "ConfigMap", labels={"layer": "kube"})
        assert (namespace, "cm") in {
            (o["metadata"]["namespace"], o["metadata"]["name"]) for o in everywhere
        }
        patched = await kube.merge_patch("v1", "ConfigMap", "cm", namespace, {"data": {"a": None}})
        assert patched is not None
        assert "a" not in (patched.get("data") or {})

        with pytest.raises(KubeApiError) as invalid:
            await kube.apply(config_map(namespace, "cm2", **{"bad key!": "x"}))
        assert (invalid.value.status, invalid.value.reason) == (422, "Invalid")
        assert invalid.value.message.startswith("ConfigMap cm2: ")
        assert "bad key!" in invalid.value.message

        assert await kube.get("v1", "ConfigMap", "absent", namespace) is None
        assert await kube.merge_patch("v1", "ConfigMap", "absent", namespace, {}) is None
        assert await kube.delete("v1", "ConfigMap", "cm", namespace) is True
        assert await kube.delete("v1", "ConfigMap", "cm", namespace) is False
    finally:
        await kube.aclose()


def service_account_token(cluster: Any, account: str, secret: str, eventually: Any) -> str:
    """A token of ``account`` from a new service-account-token Secret ``secret``."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret,
            "annotations": {"kubernetes.io/service-account.name": account},
        },
        "type": "kubernetes.io/service-account-token",
    }
    cluster.send("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets", body)

    def token() -> str | None:
        data = (cluster.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret}") or {}).get("data")
        return base64.b64decode(data["token"]).decode() if data and "token" in data else None

    value: str = eventually(token, within=30, what=f"a token in Secret {secret}")
    return value


def rejected(cluster: Any, token: str) -> bool:
    """The apiserver refuses ``token`` (401)."""
    try:
        cluster.local.request("GET", "/api", token=token)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    return False


async def test_chart_service_account_rbac_and_token_rotation(
    charts: Any,
    namespace: str,
    eventually: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binding = charts.get(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kaito-system-kaito-workspace"
    )
    assert binding is not None
    (subject,) = binding["subjects"]
    account = subject["name"]
    old = service_account_token(charts, account, f"{account}-layer-old", eventually)
    new = service_account_token(charts, account, f"{account}-layer-new", eventually)
    token_file = tmp_path / "token"
    token_file.write_text(old + "\n")
    kubeconfig = charts.local.write_kubeconfig("unused", "kube-layer")
    kube = client_for(kubeconfig, monkeypatch, token_path=str(token_file))
    try:
        # The chart's ClusterRole: ConfigMaps may be applied and read, not deleted.
        await kube.apply(config_map(namespace, "sa-cm", a="1"))
        assert await kube.get("v1", "ConfigMap", "sa-cm", namespace) is not None
        with pytest.raises(KubeApiError) as forbidden:
            await kube.delete("v1", "ConfigMap", "sa-cm", namespace)
        assert (forbidden.value.status, forbidden.value.reason) == (403, "Forbidden")
        assert f"system:serviceaccount:{NAMESPACE}:{account}" in forbidden.value.message

        # Rotation: the file gets the new token, then the old one is revoked.
        token_file.write_text(new + "\n")
        charts.kubectl("delete", "secret", f"{account}-layer-old", "-n", NAMESPACE)
        eventually(lambda: rejected(charts, old), within=30, what="the old token refused")
        found = await kube.get("v1", "ConfigMap", "sa-cm", namespace)
        assert found is not None
        assert found["data"] == {"a": "1"}
    finally:
        await kube.aclose()
