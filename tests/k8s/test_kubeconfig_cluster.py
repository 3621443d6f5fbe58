"""``KAITO_E2E_KUBECONFIG``'s cluster access (``clusters.KubeconfigCluster``): read against
the local control plane's own admin kubeconfig, and the kubeconfigs it refuses."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.k8s


def load_clusters() -> ModuleType:
    """``clusters.py`` beside this file (conftest loads it under this name first)."""
    name = "kaito_k8s_e2e_clusters"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("clusters.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


clusters = load_clusters()


def test_a_kubeconfig_cluster_talks_to_the_apiserver_and_issues_webhook_certificates(
    cluster: Any, tmp_path: Path
) -> None:
    cluster.require_local("the local control plane's admin kubeconfig to read")
    remote = clusters.KubeconfigCluster(cluster.local.kubeconfig)
    try:
        assert remote.server == cluster.local.server
        version = remote.request("GET", "/version")["gitVersion"]
        assert f"Kubernetes {version}" == cluster.local.version()
        created = remote.request("POST", "/api/v1/namespaces", {"metadata": {"name": "kc-e2e"}})
        assert created["metadata"]["name"] == "kc-e2e"
        # A kubeconfig for another token (the admin's here) works for kubectl as written.
        written = remote.write_kubeconfig(cluster.local.admin_token, "again")
        listed = cluster.kubectl("get", "namespace", "kc-e2e", "-o", "name", kubeconfig=written)
        assert listed.stdout.strip() == "namespace/kc-e2e", listed.stderr
        # Its webhook certificates verify against its own CA, for the address asked.
        crt, _ = remote.issue_certificate(tmp_path / "cert", ["192.0.2.7"])
        verify = subprocess.run(
            ["openssl", "verify", "-CAfile", str(remote.ca_file), str(crt)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stderr
        text = subprocess.run(
            ["openssl", "x509", "-in", str(crt), "-noout", "-text"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "IP Address:192.0.2.7" in text
    finally:
        cluster.kubectl("delete", "namespace", "kc-e2e", "--wait=false")
        remote.stop()


def kubeconfig(tmp_path: Path, user: dict[str, Any], **extra: Any) -> Path:
    """A one-context kubeconfig with ``user`` (``extra`` overrides top-level keys)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://192.0.2.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
        **extra,
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("user", "extra", "message"),
    [
        (
            {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}},
            {},
            "user 'u' authenticates with exec: give a kubeconfig whose user has a token",
        ),
        ({}, {}, "user 'u' authenticates with nothing we read"),
        ({"client-certificate-data": "Y2VydA=="}, {}, "a client certificate without its key"),
        ({"token": "t"}, {"current-context": ""}, "no current-context"),
        ({"token": "t"}, {"current-context": "elsewhere"}, "no context named 'elsewhere'"),
    ],
)
def test_kubeconfigs_the_suite_cannot_use_are_refused_with_the_reason(
    tmp_path: Path, user: dict[str, Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(clusters.KubeconfigError, match=message):
        clusters.KubeconfigCluster(kubeconfig(tmp_path, user, **extra))
