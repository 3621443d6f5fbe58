"""A real Kubernetes control plane on loopback, from binaries built by kubernetes_build.py.

``serve`` builds the binaries once if needed (``tools/kubernetes_build.py``: Debian's
``kubernetes`` source package, Kubernetes 1.20.2, cached under
``$KAITO_CACHE_DIR/kubernetes/<version>``), then starts Debian's etcd, kube-apiserver,
kube-controller-manager and kube-scheduler on free loopback ports with fresh certificates
and tokens in a temporary directory, writes an admin kubeconfig, prints
``KUBECONFIG=<path>`` once the apiserver is ready, and serves until interrupted;
everything stops and the directory is removed on exit.

Usage::

    python tools/local_cluster.py build [--rebuild]
    python tools/local_cluster.py serve

Tests use :class:`LocalCluster` (a context manager). There is no kubelet: Pods are
scheduled to Nodes that a caller creates, and their status is whatever a caller writes.
"""

# ruff: noqa: S603, S607 - runs fixed system tools (openssl, etcd, the built binaries)

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import yaml

__all__ = ["LocalCluster", "free_port", "kubernetes_build", "main"]

READY_TIMEOUT_S = 60.0


def _load_build_module() -> ModuleType:
    """``tools/kubernetes_build.py`` (tools/ is a folder of scripts, not a package)."""
    name = "kaito_tools_kubernetes_build"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).with_name("kubernetes_build.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: The build module: ``ensure_binaries``, ``ClusterUnavailableError``, ``build``.
kubernetes_build = _load_build_module()
ClusterUnavailableError = kubernetes_build.ClusterUnavailableError
_progress = kubernetes_build.progress


# --- run ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def write_token_kubeconfig(path: Path, cluster: dict[str, Any], token: str, name: str) -> Path:
    """Write a kubeconfig for ``cluster`` (``server`` and its CA fields) whose user ``name``
    authenticates with ``token``; readable by its owner only."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kaito", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "kaito", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def subject_alt_names(hosts: list[str]) -> list[str]:
    """``IP:``/``DNS:`` subjectAltName entries for IP addresses and DNS names."""
    return [
        f"IP:{host}" if re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+:[0-9a-fA-F:]*", host) else f"DNS:{host}"
        for host in hosts
    ]


def sign_certificate(
    ca_dir: Path, crt: Path, key: Path, common_name: str, alt_names: list[str], *, days: int
) -> None:
    """A new key and a certificate for it signed by ``ca_dir``'s ``ca.crt``/``ca.key``."""
    extensions = ca_dir / f"{crt.stem}-{secrets.token_hex(4)}.ext"
    extensions.write_text(f"subjectAltName={','.join(alt_names)}\n")
    csr = extensions.with_suffix(".csr")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={common_name}",
        cwd=ca_dir,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", str(days), "-out", str(crt), "-extfile", str(extensions),
        cwd=ca_dir,
    )  # fmt: skip


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started it dies."""
    import ctypes  # noqa: PLC0415 - only in the forked child

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class LocalCluster:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback.

    A context manager: entering starts everything and waits until the apiserver is ready;
    leaving stops every process and removes the temporary directory. The nodelifecycle
    controller is off (there is no kubelet to send heartbeats, so it would taint every
    Node that a test makes).
    """

    binaries: Path | None = None
    """Folder of the three binaries (default: the cached build, built when absent)."""
    apiserver_args: list[str] = field(default_factory=list)
    """Extra kube-apiserver flags (an audit log, watch cache sizes), after the defaults."""
    workdir: Path = field(init=False)
    """Temporary directory holding certificates, tokens, kubeconfigs, logs and etcd data."""
    server: str = field(init=False)
    """The apiserver URL (``https://127.0.0.1:<port>``)."""
    etcd_url: str = field(init=False)
    """etcd's client URL (``http://127.0.0.1:<port>``, no TLS), for ``etcdctl``."""
    ca_file: Path = field(init=False)
    """The cluster CA: signs the apiserver's certificate and :meth:`issue_certificate`'s."""
    admin_token: str = field(init=False)
    """Bearer token of an admin (group ``system:masters``)."""
    kubeconfig: Path = field(init=False)
    """The admin kubeconfig."""
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(init=False, default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(init=False, default=None)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and the three components; return once the apiserver is ready."""
        binaries = self.binaries = self.binaries or kubernetes_build.ensure_binaries()
        self._tmp = tempfile.TemporaryDirectory(prefix="kaito-cluster-")
        self.workdir = Path(self._tmp.name)
        self._make_credentials()
        client, peer, secure = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{secure}"
        etcd_url = self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                "etcd",
                "--name=kaito",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=kaito=http://127.0.0.1:{peer}",
            ],
        )
        self._wait("etcd", lambda: _http_ok(f"{etcd_url}/health"))
        files = self.workdir
        self._spawn(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={secure}",
                "--insecure-port=0",
                f"--etcd-servers={etcd_url}",
                f"--tls-cert-file={files / 'apiserver.crt'}",
                f"--tls-private-key-file={files / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--token-auth-file={files / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={files / 'sa.pub'}",
                f"--service-account-signing-key-file={files / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--profiling=false",
                # The advertised 127.0.0.1 may not be an Endpoints address: no reconciler.
                "--endpoint-reconciler-type=none",
                *self.apiserver_args,
            ],
        )
        self._wait("kube-apiserver", lambda: self._api_ok("/readyz"))
        self.kubeconfig = self.write_kubeconfig(self.admin_token, "admin")
        manager = self.write_kubeconfig(self._tokens["controller-manager"], "controller-manager")
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={manager}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={files / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--controllers=*,-nodelifecycle",
            ],
        )
        scheduler = self.write_kubeconfig(self._tokens["scheduler"], "scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                f"--kubeconfig={scheduler}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
            ],
        )
        # The token controller signs the default ServiceAccount's token: the controller
        # manager is serving once it exists.
        self._wait("kube-controller-manager", self._default_service_account_ready)

    def stop(self) -> None:
        """Stop every process (last started first) and remove the temporary directory."""
        for _, process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self._processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def version(self) -> str:
        """The apiserver's version line (``Kubernetes v1.20.2``)."""
        assert self.binaries is not None
        command = [str(self.binaries / "kube-apiserver"), "--version"]
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()

    def pid(self, name: str) -> int:
        """The process id of a component (``etcd``, ``kube-apiserver``, ...)."""
        return self._process(name).pid

    def restart(self, name: str) -> None:
        """Stop a component (SIGTERM) and start it again with the same command line, its
        log appended; for the apiserver, return once it is ready again. Clients' watches
        are cut; resumed from a resourceVersion older than the new apiserver's watch cache,
        they are answered 410 Gone."""
        process = self._process(name)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._processes.remove((name, process))
        command = process.args
        assert isinstance(command, list)  # _spawn starts every component from a list
        self._spawn(name, [str(arg) for arg in command], append=True)
        if name == "kube-apiserver":
            self._wait(name, lambda: self._api_ok("/readyz"))

    def exited(self) -> str | None:
        """The name of a component that has exited, or None while all run."""
        for name, process in self._processes:
            if process.poll() is not None:
                return name
        return None

    def logs(self, name: str) -> str:
        """The last 4,000 characters of a component's log (for failure messages)."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def write_kubeconfig(self, token: str, name: str) -> Path:
        """A kubeconfig for this cluster that authenticates with ``token``."""
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        cluster = {"server": self.server, "certificate-authority-data": ca_data}
        return write_token_kubeconfig(self.workdir / f"{name}.kubeconfig", cluster, token, name)

    def issue_certificate(self, directory: Path, hosts: list[str]) -> tuple[Path, Path]:
        """A serving certificate for ``hosts`` (IPs or DNS names) signed by the cluster CA;
        written as ``tls.crt`` and ``tls.key`` in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        names = subject_alt_names(hosts)
        crt, key = directory / "tls.crt", directory / "tls.key"
        self._sign(crt, key, hosts[0], names)
        return crt, key

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> dict[str, object]:
        """A JSON request to the apiserver, as admin unless ``token`` is given
        (``urllib.error.HTTPError`` on >= 400)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - our own https URL
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.admin_token}",
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            raw = response.read()
        # Health endpoints answer plain text ("ok").
        result: dict[str, object] = json.loads(raw) if raw.lstrip().startswith(b"{") else {}
        return result

    # --- internals ---

    def _make_credentials(self) -> None:
        files = self.workdir
        self.ca_file = files / "ca.crt"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=kaito-local-ca",
            cwd=files,
        )  # fmt: skip
        self._sign(
            files / "apiserver.crt",
            files / "apiserver.key",
            "kube-apiserver",
            ["IP:127.0.0.1", "IP:10.0.0.1", "DNS:localhost", "DNS:kubernetes.default.svc"],
        )
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=files)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=files)
        self._tokens = {
            role: secrets.token_hex(16) for role in ("admin", "controller-manager", "scheduler")
        }
        self.admin_token = self._tokens["admin"]
        (files / "tokens.csv").write_text(
            f'{self._tokens["admin"]},kaito-admin,1,"system:masters"\n'
            f"{self._tokens['controller-manager']},system:kube-controller-manager,2\n"
            f"{self._tokens['scheduler']},system:kube-scheduler,3\n"
        )

    def _sign(self, crt: Path, key: Path, common_name: str, alt_names: list[str]) -> None:
        sign_certificate(self.workdir, crt, key, common_name, alt_names, days=7)

    def _process(self, name: str) -> subprocess.Popen[bytes]:
        for process_name, process in self._processes:
            if process_name == name:
                return process
        raise KeyError(f"no component {name!r} (known: {[n for n, _ in self._processes]})")

    def _spawn(self, name: str, command: list[str], *, append: bool = False) -> None:
        log = (self.workdir / f"{name}.log").open("ab" if append else "wb")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads started here
        )
        log.close()
        self._processes.append((name, process))

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        start = time.monotonic()
        while time.monotonic() - start < READY_TIMEOUT_S:
            for process_name, process in self._processes:
                if process.poll() is not None:
                    log = self.logs(process_name)
                    message = f"{process_name} exited with {process.returncode}:\n{log}"
                    raise ClusterUnavailableError(message)
            if ready():
                _progress(f"{name} ready after {time.monotonic() - start:.1f} s")
                return
            time.sleep(0.2)
        raise ClusterUnavailableError(
            f"{name} not ready in {READY_TIMEOUT_S} s:\n{self.logs(name)}"
        )

    def _api_ok(self, path: str) -> bool:
        try:
            self.request("GET", path)
        except (OSError, ValueError):
            return False
        return True

    def _default_service_account_ready(self) -> bool:
        try:
            account = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        except (OSError, ValueError):
            return False
        return bool(account.get("secrets"))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _serve() -> int:
    """Start the control plane, print ``KUBECONFIG=<path>``, serve until interrupted."""
    stop = {"now": False}

    def interrupted(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    with LocalCluster() as cluster:
        _progress(f"{cluster.version()} serving at {cluster.server}; Ctrl-C stops it")
        print(f"KUBECONFIG={cluster.kubeconfig}", flush=True)
        while not stop["now"]:
            exited = cluster.exited()
            if exited:
                _progress(f"{exited} exited:\n{cluster.logs(exited)}")
                return 1
            time.sleep(0.5)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: ``build`` or ``serve``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build (or reuse) the cached binaries")
    build_command.add_argument("--rebuild", action="store_true", help="ignore the cache")
    commands.add_parser("serve", help="build if needed, start, serve until interrupted")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(kubernetes_build.build(rebuild=args.rebuild))
            return 0
        return _serve()
    except ClusterUnavailableError as exc:
        _progress(f"unavailable: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
