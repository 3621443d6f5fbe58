"""The lightkube layer against the emulator: what it sends (server-side apply as
``kaito-operator`` with force), what comes back (plain dicts; 404 as a result; other
refusals as KubeApiError naming the object), a rotated token file, kopf's credentials.

The same layer against a real kube-apiserver (managed fields, conflicts, RBAC, TLS) is
``tests/k8s/test_kube_layer.py``.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio
from lightkube.config.client_adapter import verify_cluster

from kaito_operator.kube import FIELD_MANAGER, KubeApiError, KubeClient, config_from_kopf
from kaito_operator_testing import KubernetesEmulator

CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cm", "namespace": "default", "labels": {"a": "1"}},
    "data": {"k": "v", "gone": "soon"},
}
STATEFULSET = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {"name": "sts", "namespace": "default"},
    "spec": {"replicas": 1, "serviceName": "sts"},
}


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[KubernetesEmulator]:
    async with KubernetesEmulator() as emu, kmock.Server(emu):
        yield emu


@pytest_asyncio.fixture
async def client(emulator: KubernetesEmulator) -> AsyncIterator[KubeClient]:
    kube = KubeClient.from_kopf(kopf.ConnectionInfo(server=url_of(emulator)))
    yield kube
    await kube.aclose()


def url_of(emu: KubernetesEmulator) -> str:
    return str(emu.url).rstrip("/")


def writes(emu: KubernetesEmulator) -> list[Any]:
    return [r for r in emu.recorded_requests if r.method.value != "GET"]


@pytest.mark.asyncio
async def test_apply_is_server_side_apply_as_the_operator_and_idempotent(
    emulator: KubernetesEmulator, client: KubeClient
) -> None:
    first = await client.apply(CONFIG_MAP)
    [request] = writes(emulator)
    assert request.method.value == "PATCH"
    assert request.url.path == "/api/v1/namespaces/default/configmaps/cm"
    assert request.headers["Content-Type"] == "application/apply-patch+yaml"
    assert dict(request.params) == {"fieldManager": FIELD_MANAGER, "force": "true"}
    assert type(first) is dict
    assert first["data"] == CONFIG_MAP["data"]

    again = await client.apply(CONFIG_MAP)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed = await client.apply({**CONFIG_MAP, "data": {"k": "w"}})
    assert changed["data"]["k"] == "w"


@pytest.mark.asyncio
async def test_list_get_patch_delete_round_trip(client: KubeClient) -> None:
    await client.apply(CONFIG_MAP)
    await client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}})
    await client.apply({**CONFIG_MAP, "metadata": {"name": "other", "namespace": "ns2"}})
    by_label = await client.list("v1", "ConfigMap", "default", labels={"a": "1"})
    assert [o["metadata"]["name"] for o in by_label] == ["cm"]
    assert await client.list("v1", "ConfigMap", "default", labels={"a": "2"}) == []
    everywhere = await client.list("v1", "ConfigMap")  # no namespace: all of them
    assert {o["metadata"]["name"] for o in everywhere} >= {"cm", "other"}

    patched = await client.merge_patch("v1", "ConfigMap", "cm", "default", {"data": {"gone": None}})
    assert patched is not None
    assert patched["data"] == {"k": "v"}
    fetched = await client.get("v1", "ConfigMap", "cm", "default")
    assert fetched is not None
    assert fetched["data"] == {"k": "v"}
    assert await client.delete("v1", "ConfigMap", "cm", "default") is True
    assert await client.get("v1", "ConfigMap", "cm", "default") is None


@pytest.mark.asyncio
async def test_patch_status_writes_only_the_status(
    emulator: KubernetesEmulator, client: KubeClient
) -> None:
    await client.apply(STATEFULSET)
    written = await client.patch_status(
        "apps/v1", "StatefulSet", "sts", "default", {"readyReplicas": 1}
    )
    assert written is not None
    assert written["status"] == {"readyReplicas": 1}
    assert written["spec"]["replicas"] == 1
    assert writes(emulator)[-1].url.path.endswith("/statefulsets/sts/status")


@pytest.mark.asyncio
async def test_missing_objects_are_results_not_errors(client: KubeClient) -> None:
    assert await client.get("v1", "ConfigMap", "nope", "default") is None
    assert await client.delete("v1", "ConfigMap", "nope", "default") is False
    assert await client.merge_patch("v1", "ConfigMap", "nope", "default", {"data": {}}) is None
    assert await client.patch_status("apps/v1", "StatefulSet", "nope", "default", {}) is None
    with pytest.raises(KubeApiError) as refused:
        await client.apply({**CONFIG_MAP, "metadata": {"name": "cm", "namespace": "missing"}})
    assert refused.value.status == 404
    assert refused.value.message.startswith("ConfigMap cm: ")
    assert "missing" in refused.value.message


@pytest.mark.asyncio
async def test_refusals_are_kube_api_errors_naming_the_object(
    emulator: KubernetesEmulator, client: KubeClient
) -> None:
    emulator[kmock.resource("apps", "v1", "statefulsets")] << 500
    with pytest.raises(KubeApiError) as refused:
        await client.apply(STATEFULSET)
    assert refused.value.status == 500
    assert refused.value.message.startswith("StatefulSet sts: ")
    with pytest.raises(KubeApiError):
        await client.list("apps/v1", "StatefulSet", "default")


@pytest.mark.asyncio
async def test_rotated_token_file_is_read_again_on_401(
    emulator: KubernetesEmulator, tmp_path: Path
) -> None:
    """The kubelet swaps the projected token file; the old token stops working later."""
    token = tmp_path / "token"
    token.write_text("first\n")
    client = KubeClient.from_kopf(
        kopf.ConnectionInfo(server=url_of(emulator)), token_path=str(token)
    )
    try:
        await client.get("v1", "ConfigMap", "x", "default")
        token.write_text("second\n")
        await client.get("v1", "ConfigMap", "x", "default")  # still "first": it works
        emulator[lambda request: request.headers.get("Authorization") == "Bearer first"] << 401
        assert await client.get("v1", "ConfigMap", "x", "default") is None  # 401, re-read
        await client.get("v1", "ConfigMap", "x", "default")
    finally:
        await client.aclose()
    sent = [r.headers.get("Authorization") for r in emulator.recorded_requests]
    assert sent == [
        "Bearer first",
        "Bearer first",
        "Bearer first",
        "Bearer second",
        "Bearer second",
    ]


def test_kopf_credentials_become_the_lightkube_configuration(tls_dir: Path) -> None:
    """CA data in a kubeconfig's base64 form or as PEM (kopf passes either) is trusted."""
    pem = (tls_dir / "ca.crt").read_bytes()
    for ca_data in (base64.b64encode(pem).decode(), pem.decode()):
        info = kopf.ConnectionInfo(server="https://127.0.0.1:6443", ca_data=ca_data, token="t")
        config = config_from_kopf(info)
        assert config.cluster.server == "https://127.0.0.1:6443"
        assert config.user is not None
        assert config.user.token == "t"
        context = verify_cluster(config.cluster, config.user, config.abs_file)
        assert context.verify_mode == ssl.CERT_REQUIRED
        subjects = [
            dict(pair for rdn in c["subject"] for pair in rdn) for c in context.get_ca_certs()
        ]
        assert {"commonName": "localhost"} in subjects
    in_cluster = config_from_kopf(
        kopf.ConnectionInfo(server="https://10.0.0.1", ca_path=tls_dir / "ca.crt", token="old"),
        token_path="/var/run/secrets/kubernetes.io/serviceaccount/token",
    )
    assert in_cluster.user is not None
    assert in_cluster.user.token is None  # the file, not kopf's copy of it
    assert in_cluster.user.token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert in_cluster.cluster.certificate_auth == str(tls_dir / "ca.crt")
