"""The only module that talks to the Kubernetes API server.

Writes are server-side apply with the field manager ``kaito-operator`` (``force=true``),
so re-applying the same desired object is a no-op and a crash mid-reconcile cannot leave
duplicates. "Not found" and "already exists" are results (``None``/``False``), not
exceptions; every other failure raises :class:`KubeApiError`.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kaito_operator.kube.resources import ResourceType, resource_for, url_for

__all__ = ["FIELD_MANAGER", "ClusterConnection", "KubeApiError", "KubeClient"]

#: The field manager of every server-side apply the operator makes.
FIELD_MANAGER = "kaito-operator"


class KubeApiError(RuntimeError):
    """The API server refused a request (other than 404 on reads/deletes)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ClusterConnection:
    """Where the API server is and how to authenticate (from kopf's login result)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    ca_data: bytes | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    insecure: bool = False
    token_path: str | None = None
    """A token file re-read when it changes (projected service-account tokens rotate)."""

    @classmethod
    def from_kopf(cls, info: Any, *, token_path: str | None = None) -> ClusterConnection:
        """Build from a ``kopf.ConnectionInfo`` (certificate data is written to temp files)."""

        def to_file(data: str | bytes | None, suffix: str) -> str | None:
            if data is None:
                return None
            raw = data.encode() if isinstance(data, str) else data
            if not raw.lstrip().startswith(b"-----"):
                raw = base64.b64decode(raw)
            with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as handle:
                handle.write(raw)
            return handle.name

        ca_data = info.ca_data
        return cls(
            server=info.server,
            token=info.token,
            ca_path=str(info.ca_path) if info.ca_path else None,
            ca_data=ca_data.encode() if isinstance(ca_data, str) else ca_data,
            certificate_path=(
                str(info.certificate_path)
                if info.certificate_path
                else to_file(info.certificate_data, ".crt")
            ),
            private_key_path=(
                str(info.private_key_path)
                if info.private_key_path
                else to_file(info.private_key_data, ".key")
            ),
            insecure=bool(info.insecure),
            token_path=token_path,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS settings for the HTTP client (False: no verification)."""
        if self.insecure:
            return False
        context = ssl.create_default_context()
        if self.ca_path:
            context.load_verify_locations(cafile=self.ca_path)
        elif self.ca_data:
            raw = self.ca_data
            if not raw.lstrip().startswith(b"-----"):
                raw = base64.b64decode(raw)
            context.load_verify_locations(cadata=raw.decode())
        if self.certificate_path and self.private_key_path:
            context.load_cert_chain(self.certificate_path, self.private_key_path)
        return context


class _RotatingToken:
    """A bearer token read from a file, re-read whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._mtime = -1.0
        self._token = ""

    def value(self) -> str:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._token = self.path.read_text(encoding="utf-8").strip()
            self._mtime = mtime
        return self._token


def _kind_of(obj: Mapping[str, Any]) -> ResourceType:
    return resource_for(obj["apiVersion"], obj["kind"])


class KubeClient:
    """A small async Kubernetes client: apply, get, list, delete, patch status."""

    def __init__(
        self,
        connection: ClusterConnection,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 30.0,
    ) -> None:
        headers = {"Accept": "application/json"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self.field_manager = field_manager
        # Built once: encoding query parameters per request costs more than the request.
        self._apply_query = "?" + urllib.parse.urlencode(
            {"fieldManager": field_manager, "force": "true"}
        )
        self._token = _RotatingToken(connection.token_path) if connection.token_path else None
        self._base = connection.server.rstrip("/")
        self._headers = headers
        self._ssl = connection.ssl_context()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily, inside the event loop that uses it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=50),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, url: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> dict[str, Any] | None:
        if self._token is not None:
            headers = dict(kwargs.pop("headers", None) or {})
            headers["Authorization"] = f"Bearer {self._token.value()}"
            kwargs["headers"] = headers
        async with self._client().request(method, self._base + url, **kwargs) as response:
            raw = await response.read()  # JSON is UTF-8: no charset detection needed
            if response.status == 404 and missing_ok:
                return None
            if response.status >= 400:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                raise KubeApiError(
                    response.status,
                    str(body.get("reason", response.reason)),
                    str(body.get("message", raw[:500].decode("utf-8", "replace"))),
                )
            result: dict[str, Any] = json.loads(raw)
            return result

    async def apply(
        self, obj: Mapping[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (create or update the fields this operator owns)."""
        resource = _kind_of(obj)
        meta = obj["metadata"]
        url = url_for(resource, meta.get("namespace"), meta["name"], subresource)
        try:
            result = await self._request(
                "PATCH",
                url + self._apply_query,
                # JSON is YAML: the apply body needs no YAML encoder (and no anchors).
                headers={"Content-Type": "application/apply-patch+yaml"},
                data=json.dumps(obj).encode(),
            )
        except KubeApiError as exc:
            # Say which object: the message ends up in the owner's status conditions.
            subject = f"{obj['kind']} {meta['name']}" + (f" {subresource}" if subresource else "")
            raise KubeApiError(exc.status, exc.reason, f"{subject}: {exc.message}") from None
        assert result is not None
        return result

    async def server_version(self) -> dict[str, Any] | None:
        """The API server's ``GET /version`` answer (None when it has no such endpoint)."""
        return await self._request("GET", "/version", missing_ok=True)

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        url = url_for(resource_for(api_version, kind), namespace, name)
        return await self._request("GET", url, missing_ok=True)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind (in ``namespace``, or cluster-wide), optionally by labels."""
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        url = url_for(resource_for(api_version, kind), namespace)
        result = await self._request("GET", url, params=params)
        assert result is not None
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete an object; False when it was already gone."""
        url = url_for(resource_for(api_version, kind), namespace, name)
        result = await self._request(
            "DELETE", url, missing_ok=True, params={"propagationPolicy": propagation}
        )
        return result is not None

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        """JSON-merge-patch an object (a ``None`` value removes that field); None when
        the object does not exist."""
        url = url_for(resource_for(api_version, kind), namespace, name)
        return await self._request(
            "PATCH",
            url,
            missing_ok=True,
            headers={"Content-Type": "application/merge-patch+json"},
            data=json.dumps(patch).encode(),
        )

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str | None, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the ``status`` subresource; None when the object is gone."""
        url = url_for(resource_for(api_version, kind), namespace, name, "status")
        return await self._request(
            "PATCH",
            url,
            missing_ok=True,
            headers={"Content-Type": "application/merge-patch+json"},
            data=json.dumps({"status": status}).encode(),
        )
