"""The cluster the end-to-end tests run against, and the admin helpers they use on it.

:class:`Cluster` wraps either ``tools/local_cluster.py``'s control plane or, when
``KAITO_E2E_KUBECONFIG`` is set, a :class:`KubeconfigCluster`: any cluster reached through
a kubeconfig. Loaded by ``conftest.py`` (tests cannot import modules of this folder by
name under ``--import-mode=importlib``). :class:`KubeconfigCluster` offers what the fixtures use of
a ``LocalCluster``: the admin kubeconfig, JSON requests, kubeconfigs for other tokens and
serving certificates for the operator's webhook. Those certificates are signed by a CA
that the tests make (``ca_file``), not by the cluster's CA, whose key a kubeconfig does
not give: the webhook configurations carry that CA as their ``caBundle``.

The kubeconfig's current context is used, and its user must be allowed everything (the
suite installs CRDs, cluster roles and Nodes). It authenticates with a token, a token
file or a client certificate; exec and auth-provider plugins are refused with the reason.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

__all__ = ["Cluster", "KubeconfigCluster", "KubeconfigError", "load_tool"]

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (tools/ is a folder of scripts, not a package)."""
    module_name = f"kaito_tools_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class KubeconfigError(ValueError):
    """The kubeconfig cannot be used by the suite (the message says why)."""


def _material(entry: dict[str, Any], key: str, base: Path, what: str) -> bytes | None:
    """``<key>-data`` (base64) or ``<key>`` (a file, relative to the kubeconfig)."""
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = base / Path(entry[key]).expanduser()
        try:
            return path.read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"{what}: {key} {path}: {exc.strerror}") from exc
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _named(items: list[dict[str, Any]], name: str, kind: str, source: Path) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            found: dict[str, Any] = item.get(kind) or {}
            return found
    raise KubeconfigError(f"{source}: no {kind} named {name!r}")


@dataclass
class KubeconfigCluster:
    """A cluster the tests did not start: reached through ``kubeconfig`` as its user."""

    kubeconfig: Path
    """The admin kubeconfig (``KAITO_E2E_KUBECONFIG``), passed to kubectl and helm as is."""
    server: str = field(init=False)
    """The apiserver URL of the current context."""
    workdir: Path = field(init=False)
    """Temporary directory: the tests' CA, credential files, written kubeconfigs."""
    ca_file: Path = field(init=False)
    """The tests' CA: signs :meth:`issue_certificate`'s certificates (a webhook's
    ``caBundle``); the apiserver's own CA is the kubeconfig's."""
    _api_ca: bytes | None = field(init=False, default=None)
    _insecure: bool = field(init=False, default=False)
    _token: str | None = field(init=False, default=None)
    _client_cert: tuple[Path, Path] | None = field(init=False, default=None)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        config = yaml.safe_load(self.kubeconfig.read_text()) or {}
        base = self.kubeconfig.parent
        context_name = config.get("current-context")
        if not context_name:
            raise KubeconfigError(f"{self.kubeconfig}: no current-context")
        context = _named(config.get("contexts") or [], context_name, "context", self.kubeconfig)
        cluster = _named(
            config.get("clusters") or [], context["cluster"], "cluster", self.kubeconfig
        )
        user = _named(config.get("users") or [], context["user"], "user", self.kubeconfig)
        what = f"{self.kubeconfig}: user {context['user']!r}"
        self.server = str(cluster["server"]).rstrip("/")
        self._api_ca = _material(cluster, "certificate-authority", base, what)
        self._insecure = bool(cluster.get("insecure-skip-tls-verify"))
        self._tmp = tempfile.TemporaryDirectory(prefix="kaito-e2e-kubeconfig-")
        self.workdir = Path(self._tmp.name)
        if user.get("token"):
            self._token = str(user["token"])
        elif user.get("tokenFile"):
            self._token = (base / user["tokenFile"]).read_text().strip()
        elif user.get("client-certificate") or user.get("client-certificate-data"):
            cert = _material(user, "client-certificate", base, what)
            key = _material(user, "client-key", base, what)
            if cert is None or key is None:
                raise KubeconfigError(f"{what}: a client certificate without its key")
            paths = (self.workdir / "client.crt", self.workdir / "client.key")
            for path, content in zip(paths, (cert, key), strict=True):
                path.write_bytes(content)
                path.chmod(0o600)
            self._client_cert = paths
        else:
            plugins = [p for p in ("exec", "auth-provider") if p in user]
            raise KubeconfigError(
                f"{what} authenticates with {plugins[0] if plugins else 'nothing we read'}: "
                "give a kubeconfig whose user has a token, a tokenFile or a client certificate"
            )
        self.ca_file = self.workdir / "ca.crt"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=kaito-e2e-webhook-ca",
            cwd=self.workdir,
        )  # fmt: skip

    def stop(self) -> None:
        """Remove the temporary directory (the cluster itself is not ours to stop)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _context(self) -> ssl.SSLContext:
        if self._insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self._api_ca is not None:
            context = ssl.create_default_context(cadata=self._api_ca.decode())
        else:
            context = ssl.create_default_context()
        if self._client_cert is not None:
            context.load_cert_chain(*map(str, self._client_cert))
        return context

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> dict[str, object]:
        """A JSON request to the apiserver as the kubeconfig's user unless ``token`` is
        given (``urllib.error.HTTPError`` on >= 400)."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        bearer = token or self._token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, context=self._context(), timeout=10) as response:
            raw = response.read()
        result: dict[str, object] = json.loads(raw) if raw.lstrip().startswith(b"{") else {}
        return result

    def write_kubeconfig(self, token: str, name: str) -> Path:
        """A kubeconfig for this cluster that authenticates with ``token``."""
        cluster: dict[str, Any] = {"server": self.server}
        if self._insecure:
            cluster["insecure-skip-tls-verify"] = True
        elif self._api_ca is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self._api_ca).decode()
        path = self.workdir / f"{name}.kubeconfig"
        written: Path = load_tool("local_cluster").write_token_kubeconfig(
            path, cluster, token, name
        )
        return written

    def issue_certificate(self, directory: Path, hosts: list[str]) -> tuple[Path, Path]:
        """A serving certificate for ``hosts`` (IP addresses or DNS names) signed by
        ``ca_file``; written as ``tls.crt`` and ``tls.key`` in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        tool = load_tool("local_cluster")
        crt, key = directory / "tls.crt", directory / "tls.key"
        names = tool.subject_alt_names(hosts)
        tool.sign_certificate(self.workdir, crt, key, hosts[0], names, days=2)
        return crt, key


@dataclass
class Cluster:
    """The running control plane, with admin helpers for the tests."""

    local: Any
    """The ``tools/local_cluster.LocalCluster``, or a ``KubeconfigCluster``."""
    kubectl_binary: Path
    helm_binary: Path
    restarts: list[tuple[float, float]] = field(default_factory=list)
    """(from, to) epoch seconds of each apiserver restart and the 15 s after it was ready
    again: until its RBAC cache is filled, the apiserver refuses ServiceAccounts (403)."""

    @property
    def external(self) -> bool:
        """Whether this is a cluster the suite did not start (``KAITO_E2E_KUBECONFIG``)."""
        return isinstance(self.local, KubeconfigCluster)

    def require_local(self, needs: str) -> None:
        """Skip the test on a ``KAITO_E2E_KUBECONFIG`` cluster, saying what it needs."""
        if self.external:
            pytest.skip(f"needs {needs}: only the local control plane allows it")

    def restart_apiserver(self) -> None:
        """Restart the local control plane's apiserver (same flags, same etcd); return once
        it is ready. The window is recorded in ``restarts``."""
        self.require_local("a restart of the apiserver")
        began = time.time()
        self.local.restart("kube-apiserver")
        self.restarts.append((began, time.time() + 15))

    def kubectl(
        self, *args: str, stdin: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (as admin unless ``kubeconfig``); the caller checks the result."""
        config = kubeconfig or self.local.kubeconfig
        return subprocess.run(
            [str(self.kubectl_binary), f"--kubeconfig={config}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def apply(
        self, manifest: dict[str, Any] | str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of one object (a dict) or YAML text, as admin."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", *extra, stdin=text)

    def get(self, path: str) -> dict[str, Any] | None:
        """GET an API path as admin; None on 404."""
        try:
            result: dict[str, Any] = self.local.request("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return result

    def send(
        self, method: str, path: str, body: object, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """A write as admin (``merge-patch+json`` etc. through ``content_type``)."""
        result: dict[str, Any] = self.local.request(method, path, body, content_type=content_type)
        return result

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run helm as admin; fail the test with helm's output on an error (``check``)."""
        result = subprocess.run(
            [str(self.helm_binary), f"--kubeconfig={self.local.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result
