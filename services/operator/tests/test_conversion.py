"""The RAGEngine CRD's conversion webhook: ConversionReview handling, and ``/convert`` on
the operator's HTTPS webhook server beside the admission webhook."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kmock
import kopf
import pytest
import pytest_asyncio

from kaito_operator.conversion import (
    conversion_client_config,
    conversion_crd_patch,
    review_conversion,
)
from kaito_operator.kube import KubeClient
from kaito_operator.settings import OperatorSettings
from kaito_operator_testing import KubernetesEmulator
from kaito_operator_testing.harness import OperatorHarness

ALPHA_RAG: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "RAGEngine",
    "metadata": {"name": "rag", "namespace": "default", "uid": "u-1"},
    "spec": {
        "embedding": {"local": {"modelID": "BAAI/bge-small-en-v1.5"}},
        "storage": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"},
        "indexServiceName": "rag-index",
    },
    "status": {"workerNodes": ["node-1"]},
}
BETA_RAG: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "RAGEngine",
    "metadata": {"name": "rag", "namespace": "default", "uid": "u-1"},
    "spec": {
        "embedding": {"local": {"modelID": "BAAI/bge-small-en-v1.5"}},
        "storage": {
            "persistentVolume": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"}
        },
    },
    "status": {"workerNodes": ["node-1"]},
}


def conversion_review(desired: str, objects: list[Any], uid: str = "c0ffee") -> dict[str, Any]:
    """A ConversionReview as the API server sends it."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
    }


def test_every_object_is_converted_and_the_uid_echoed() -> None:
    stored = review_conversion(conversion_review("kaito.sh/v1beta1", [ALPHA_RAG, BETA_RAG]))
    assert stored["apiVersion"] == "apiextensions.k8s.io/v1"
    assert stored["kind"] == "ConversionReview"
    response = stored["response"]
    assert response["uid"] == "c0ffee"
    assert response["result"] == {"status": "Success"}
    first, second = response["convertedObjects"]
    assert first["apiVersion"] == second["apiVersion"] == "kaito.sh/v1beta1"
    assert first["spec"]["storage"] == BETA_RAG["spec"]["storage"]
    assert first["metadata"]["annotations"] == {
        "kaito.sh/v1alpha1-fields": '{"indexServiceName":"rag-index"}'
    }
    assert first["status"] == ALPHA_RAG["status"]
    assert second == BETA_RAG
    # And back: the v1alpha1 object the user wrote, exactly.
    back = review_conversion(conversion_review("kaito.sh/v1alpha1", [first], uid="back"))
    assert back["response"]["uid"] == "back"
    assert back["response"]["convertedObjects"] == [ALPHA_RAG]


def test_an_empty_list_converts_to_an_empty_list() -> None:
    response = review_conversion(conversion_review("kaito.sh/v1alpha1", []))["response"]
    assert response == {"uid": "c0ffee", "convertedObjects": [], "result": {"status": "Success"}}


@pytest.mark.parametrize(
    ("review", "message"),
    [
        (
            conversion_review("kaito.sh/v1", [ALPHA_RAG]),
            "request.objects[0] (RAGEngine rag): desiredAPIVersion: 'kaito.sh/v1'",
        ),
        (
            conversion_review(
                "kaito.sh/v1beta1",
                [
                    BETA_RAG,
                    {
                        **ALPHA_RAG,
                        "metadata": {"name": "x", "annotations": {"kaito.sh/v1beta1-fields": "{"}},
                    },
                ],
            ),
            "request.objects[1] (RAGEngine x): metadata.annotations[kaito.sh/v1beta1-fields]:",
        ),
        (conversion_review("kaito.sh/v1beta1", ["text"]), "request.objects[0]: must be an object"),
        (conversion_review("kaito.sh/v1beta1", None), "request.objects: required, a list"),  # type: ignore[arg-type]  # a missing list on purpose
        (
            {"request": {"uid": "c0ffee", "objects": []}},
            "request.desiredAPIVersion: required",
        ),
        ({"kind": "ConversionReview"}, "request: required"),
        ([1, 2], "request: required"),
    ],
    ids=[
        "bad-version",
        "broken-annotation",
        "not-an-object",
        "no-objects",
        "no-desired",
        "no-request",
        "not-a-review",
    ],
)
def test_a_failure_is_answered_with_status_failure_and_a_message(review: Any, message: str) -> None:
    response = review_conversion(review)["response"]
    assert response["result"]["status"] == "Failure"
    assert response["result"]["message"].startswith(message)
    assert "convertedObjects" not in response
    expected_uid = review.get("request", {}).get("uid", "") if isinstance(review, dict) else ""
    assert response["uid"] == expected_uid


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[tuple[KubernetesEmulator, KubeClient]]:
    """The API emulator (serving ValidatingWebhookConfigurations) and a client to it."""
    async with KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.register_resource(
            "admissionregistration.k8s.io/v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            namespaced=False,
            status=False,
        )
        client = KubeClient.from_kopf(kopf.ConnectionInfo(server=str(server.url).rstrip("/")))
        yield emulator, client
        await client.aclose()


def _webhook_configuration(client_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "rag-system-kaito-ragengine"},
        "webhooks": [
            {
                "name": "validation.ragengine.kaito.sh",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": client_config,
            }
        ],
    }


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("admission", "conversion"),
    [
        (
            {
                "caBundle": "Q0E=",
                "service": {"namespace": "rag-system", "name": "rag-webhook", "port": 9555},
            },
            {
                "caBundle": "Q0E=",
                "service": {
                    "namespace": "rag-system",
                    "name": "rag-webhook",
                    "port": 9555,
                    "path": "/convert",
                },
            },
        ),
        (
            {"caBundle": "Q0E=", "url": "https://127.0.0.1:4443/validate-ragengine"},
            {"caBundle": "Q0E=", "url": "https://127.0.0.1:4443/convert"},
        ),
    ],
    ids=["service", "url"],
)
async def test_the_crd_points_where_the_admission_webhook_points(
    kube: tuple[KubernetesEmulator, KubeClient],
    admission: dict[str, Any],
    conversion: dict[str, Any],
    tmp_path: Path,
) -> None:
    emulator, client = kube
    await emulator.create_object(_webhook_configuration(admission))
    settings = OperatorSettings(
        webhook_configuration="rag-system-kaito-ragengine", webhook_cert_dir=str(tmp_path)
    )
    client_config = await conversion_client_config(client, settings)
    assert client_config == conversion
    patch = conversion_crd_patch(client_config)
    other = "service" if "url" in conversion else "url"  # exactly one of them is allowed
    assert patch == {
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {**conversion, other: None},
                },
            }
        }
    }


@pytest.mark.asyncio
async def test_without_a_webhook_configuration_the_crd_points_at_the_settings_service(
    kube: tuple[KubernetesEmulator, KubeClient], tmp_path: Path
) -> None:
    _, client = kube
    settings = OperatorSettings(
        release_namespace="rag-system",
        webhook_service="rag-webhook",
        webhook_port=9555,
        webhook_cert_dir=str(tmp_path),
    )
    service = {"namespace": "rag-system", "name": "rag-webhook", "path": "/convert", "port": 9555}
    assert await conversion_client_config(client, settings) == {"service": service}
    (tmp_path / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    with_ca = await conversion_client_config(client, settings)
    assert base64.b64decode(with_ca["caBundle"]) == (tmp_path / "ca.crt").read_bytes()


@pytest.mark.asyncio
async def test_the_webhook_server_converts_on_convert_and_still_admits(
    tls_dir: Path, repo_root: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    crds = [repo_root / "charts" / "kaito-ragengine" / "crds" / "kaito.sh_ragengines.yaml"]
    settings = {
        "controllers": frozenset({"ragengine"}),
        "webhook_enabled": True,
        "webhook_port": port,
        "webhook_cert_dir": str(tls_dir),
        "release_namespace": "rag-system",
        "webhook_service": "rag-webhook",
    }
    async with OperatorHarness(crds, **settings) as cluster:
        await cluster.start_operator()
        trust = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        base = f"https://localhost:{port}"  # the certificate's name
        async with httpx.AsyncClient(base_url=base, verify=trust) as client:
            for _ in range(100):  # kopf reports ready before the webhook server listens
                try:
                    await client.get("/")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            review = conversion_review("kaito.sh/v1beta1", [ALPHA_RAG])
            converted = (await client.post("/convert", json=review)).json()
            broken = await client.post("/convert", content=b"{not json")
            admission = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "adm-1",
                    "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "RAGEngine"},
                    "resource": {
                        "group": "kaito.sh",
                        "version": "v1beta1",
                        "resource": "ragengines",
                    },
                    "operation": "CREATE",
                    "userInfo": {"username": "alice"},
                    "object": converted["response"]["convertedObjects"][0],
                },
            }
            admitted = (await client.post("/validate-ragengine", json=admission)).json()
        crd = cluster.emulator.read_object(
            "apiextensions.k8s.io/v1", "customresourcedefinitions", None, "ragengines.kaito.sh"
        )
        assert crd is not None
    assert converted["response"]["uid"] == "c0ffee"
    assert converted["response"]["result"] == {"status": "Success"}
    assert converted["response"]["convertedObjects"][0]["spec"]["storage"] == {
        "persistentVolume": {"persistentVolumeClaim": "rag-data", "mountPath": "/mnt/index"}
    }
    assert broken.status_code == 400  # a bad body is the caller's error, never a 500
    assert admitted["response"]["uid"] == "adm-1"
    assert admitted["response"]["allowed"] is True
    # At startup the operator pointed the CRD's conversion webhook at its Service.
    client_config = crd["spec"]["conversion"]["webhook"]["clientConfig"]
    assert "url" not in client_config
    assert client_config["service"] == {
        "namespace": "rag-system",
        "name": "rag-webhook",
        "path": "/convert",
        "port": port,
    }
    assert base64.b64decode(client_config["caBundle"]) == (tls_dir / "ca.crt").read_bytes()
