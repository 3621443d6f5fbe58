"""The charts, RBAC, CRD schemas and admission webhook against a real apiserver (1.20).

The webhook is reached at ``https://127.0.0.1:<port>`` (``clientConfig.url``, with a
certificate for that address signed by the cluster CA): there is no pod network or
cluster DNS here for the chart's Service route. Everything else is the chart's own.
"""

from __future__ import annotations

import copy
import json
import socket
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.k8s

NAMESPACE = "kaito-system"
SELECTOR = {"labelSelector": {"matchLabels": {"apps": "e2e"}}}
PRESET = {"preset": {"name": "smollm2-135m-instruct"}}
TUNING = {
    "preset": {"name": "smollm2-135m-instruct"},
    "method": "lora",
    "input": {"urls": ["https://example.com/data.parquet"]},
    "output": {"image": "registry.example.com/adapter:1", "imagePushSecret": "push"},
}


def workspace(name: str, **body: Any) -> dict[str, Any]:
    """A Workspace manifest (``metadata`` and ``resource`` may be overridden)."""
    meta = body.pop("metadata", {})
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, **meta},
        "resource": body.pop("resource", SELECTOR),
        **body,
    }


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


#: Invalid Workspaces -> the field-named rule the SDK refuses each with.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "both-inference-and-tuning": (
        workspace("both", inference=PRESET, tuning=TUNING),
        "inference: exactly one of inference and tuning is required; both are set",
    ),
    "neither-inference-nor-tuning": (
        workspace("neither"),
        "inference: exactly one of inference and tuning is required; neither is set",
    ),
    "preset-and-template": (
        workspace(
            "preset-template",
            inference={
                **PRESET,
                "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}},
            },
        ),
        "inference: preset and template are mutually exclusive",
    ),
    "unknown-preset": (
        workspace("unknown-preset", inference={"preset": {"name": "no-such-model"}}),
        "inference.preset.name: unknown preset 'no-such-model'",
    ),
    "adapter-strength-above-1": (
        workspace(
            "strength",
            inference={
                **PRESET,
                "adapters": [
                    {"source": {"name": "a", "image": "registry.example.com/a:1"}, "strength": "2"}
                ],
            },
        ),
        "inference.adapters[0].strength: must be between 0 and 1, got 2",
    ),
    "tuning-without-method": (
        workspace("no-method", tuning=without(TUNING, "method")),
        "tuning.method: is required (lora or qlora)",
    ),
    "tuning-unknown-method": (
        workspace("bad-method", tuning={**TUNING, "method": "full"}),
        "tuning.method: 'full' is not one of lora, qlora",
    ),
    "tuning-without-input": (
        workspace("no-input", tuning=without(TUNING, "input")),
        "tuning.input: is required",
    ),
    "output-image-without-push-secret": (
        workspace("no-secret", tuning={**TUNING, "output": {"image": "registry.example.com/a:1"}}),
        "tuning.output.imagePushSecret: is required when output.image is set",
    ),
    "tuning-url-scheme": (
        workspace("ftp", tuning={**TUNING, "input": {"urls": ["ftp://example.com/d"]}}),
        "tuning.input.urls[0]: URL 'ftp://example.com/d' is not allowed (scheme)",
    ),
    "config-name-not-dns": (
        workspace("config-name", inference={**PRESET, "config": "Bad_Name"}),
        "inference.config: 'Bad_Name' is not a DNS-1123 subdomain",
    ),
    "config-map-missing": (
        workspace("config-missing", inference={**PRESET, "config": "absent"}),
        "inference.config: ConfigMap 'absent' does not exist in namespace",
    ),
    "runtime-annotation": (
        workspace(
            "runtime",
            metadata={"annotations": {"kaito.sh/runtime": "bogus"}},
            inference=PRESET,
        ),
        "metadata.annotations[kaito.sh/runtime]: 'bogus' is not one of vllm, transformers",
    ),
    "count-below-1": (
        workspace("count", resource={**SELECTOR, "count": -1}, inference=PRESET),
        "resource.count: must be at least 1, got -1",
    ),
    "label-selector-missing": (
        workspace("no-selector", resource={}, inference=PRESET),
        "resource.labelSelector",
    ),
}


def closed_loopback_port() -> int:
    """A loopback port nothing listens on (right after this returns)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_helm_installs_both_charts_on_the_real_apiserver(charts: Any) -> None:
    releases = json.loads(charts.helm("list", "-n", NAMESPACE, "-o", "json").stdout)
    assert {(r["name"], r["status"]) for r in releases} == {
        ("kaito-workspace", "deployed"),
        ("kaito-ragengine", "deployed"),
    }
    for crd in ("workspaces.kaito.sh", "ragengines.kaito.sh"):
        stored = charts.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
        assert stored is not None, crd
        conditions = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
        assert conditions["Established"] == "True", (crd, conditions)
        assert conditions.get("NonStructuralSchema") is None, (crd, conditions)
    for release in ("kaito-workspace", "kaito-ragengine"):
        configuration = charts.get(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
            f"{NAMESPACE}-{release}"
        )
        assert configuration is not None, release
        assert configuration["webhooks"][0]["failurePolicy"] == "Fail"


def test_crd_schemas_alone_refuse_what_openapi_can_express(charts: Any, namespace: str) -> None:
    """Item 6: with the webhook unreachable, ``failurePolicy: Fail`` refuses even a valid
    Workspace; with no webhook registered, which invalid Workspaces does the apiserver
    refuse by the CRD schema alone? (``--dry-run=server``: nothing is stored.)"""
    path = (
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/"
        f"{NAMESPACE}-kaito-workspace"
    )
    saved = charts.get(path)
    assert saved is not None
    closed_port = closed_loopback_port()
    unreachable = [
        {
            "op": "replace",
            "path": "/webhooks/0/clientConfig",
            "value": {"url": f"https://127.0.0.1:{closed_port}/validate-workspace"},
        }
    ]
    charts.send("PATCH", path, unreachable, content_type="application/json-patch+json")
    try:
        valid = workspace("valid-webhook-down", inference=PRESET)
        valid["metadata"]["namespace"] = namespace
        down = charts.apply(valid, "--dry-run=server")
        assert down.returncode != 0, "admitted with the webhook down (failurePolicy Fail)"
        assert 'failed calling webhook "validation.workspace.kaito.sh"' in down.stderr, down.stderr
        charts.kubectl("delete", "validatingwebhookconfiguration", saved["metadata"]["name"])
        refused = {}
        for case, (manifest, _) in INVALID.items():
            body = copy.deepcopy(manifest)
            body["metadata"]["namespace"] = namespace
            result = charts.apply(body, "--dry-run=server", "--validate=false")
            if result.returncode != 0:
                refused[case] = result.stderr.strip()
    finally:
        restored = copy.deepcopy(saved)
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            restored["metadata"].pop(key, None)
        charts.send(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            restored,
        )
    print("refused by the CRD schema alone:", json.dumps(refused, indent=2))
    assert sorted(refused) == sorted(SCHEMA_REFUSES)


#: What the generated CRD schema (OpenAPI v3, no CEL on 1.20) refuses by itself.
SCHEMA_REFUSES = [
    "config-name-not-dns",  # pattern (a DNS-1123 subdomain)
    "count-below-1",  # minimum: 1
    "label-selector-missing",  # required
    "tuning-unknown-method",  # pattern (lora or qlora, any case)
]


def test_operator_is_only_what_the_chart_grants(operator: Any, cluster: Any) -> None:
    def can(verb: str, resource: str, *extra: str) -> bool:
        result = cluster.kubectl(
            "auth", "can-i", verb, resource, *extra, kubeconfig=operator.kubeconfig
        )
        answer: str = result.stdout.strip()
        return answer == "yes"

    identity = f"system:serviceaccount:{NAMESPACE}:{operator.service_account}"
    token = yaml.safe_load(operator.kubeconfig.read_text())["users"][0]["user"]["token"]
    review = cluster.send(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}},
    )
    user = review["status"]["user"]
    assert user["username"] == identity
    assert "system:masters" not in user["groups"]
    assert can("patch", "workspaces.kaito.sh", "-A")
    assert can("patch", "workspaces.kaito.sh/status", "-A")
    assert can("create", "statefulsets.apps", "-n", "default")
    assert not can("get", "secrets", "-n", "default"), identity
    assert not can("create", "clusterrolebindings.rbac.authorization.k8s.io"), identity
    assert not can("delete", "namespaces"), identity
    assert not can("*", "*"), identity


def test_webhook_refuses_invalid_workspaces_with_the_sdk_message(
    operator: Any, cluster: Any, namespace: str
) -> None:
    for case, (manifest, rule) in INVALID.items():
        body = copy.deepcopy(manifest)
        body["metadata"]["namespace"] = namespace
        result = cluster.apply(body, "--validate=false")
        assert result.returncode != 0, f"{case} was admitted"
        if case in SCHEMA_REFUSES:  # the apiserver refuses before admission
            assert f'The Workspace "{body["metadata"]["name"]}" is invalid' in result.stderr
            continue
        assert 'admission webhook "validation.workspace.kaito.sh" denied' in result.stderr, (
            case,
            result.stderr,
        )
        assert rule in result.stderr, (case, result.stderr)
    stored = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces")
    assert stored is not None
    assert stored["items"] == []


def test_valid_workspace_is_admitted_and_immutable_fields_refused(
    operator: Any, cluster: Any, namespace: str
) -> None:
    valid = workspace("valid", inference=PRESET)
    valid["metadata"]["namespace"] = namespace
    created = cluster.apply(valid)
    assert created.returncode == 0, created.stderr
    moved = copy.deepcopy(valid)
    moved["resource"] = {"labelSelector": {"matchLabels": {"apps": "elsewhere"}}}
    result = cluster.apply(moved)
    assert result.returncode != 0
    assert "resource.labelSelector" in result.stderr, result.stderr
    assert 'admission webhook "validation.workspace.kaito.sh" denied' in result.stderr
    stored = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/valid")
    assert stored is not None
    assert stored["resource"]["labelSelector"] == valid["resource"]["labelSelector"]
