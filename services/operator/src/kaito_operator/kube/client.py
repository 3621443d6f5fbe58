"""The only module that talks to the Kubernetes API server, through lightkube's AsyncClient.

Writes are server-side apply with the field manager ``kaito-operator`` (``force=true``),
so re-applying the same desired object is a no-op and a crash mid-reconcile cannot leave
duplicates. "Not found" is a result (``None``/``False``), not an exception; every other
answer of the API server over 400 raises :class:`KubeApiError`. Failures to reach it at all
(connection refused, timeouts) propagate as lightkube's HTTP client raises them.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import httpx2
import kopf
from lightkube import AsyncClient
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import ApiError
from lightkube.types import CascadeType, PatchType

from kaito_operator.kube.resources import resource_for

__all__ = ["FIELD_MANAGER", "KubeApiError", "KubeClient", "config_from_kopf"]

#: The field manager of every server-side apply the operator makes.
FIELD_MANAGER = "kaito-operator"

_T = TypeVar("_T")


class KubeApiError(RuntimeError):
    """The API server refused a request (other than 404 on reads, deletes and patches)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_http(cls, exc: httpx2.HTTPStatusError) -> KubeApiError:
        """From lightkube's error: the API server's ``Status`` (reason and message) when it
        answered with one, else the HTTP status line and the start of the body."""
        response = exc.response
        if isinstance(exc, ApiError) and exc.status is not None:
            status = exc.status
            return cls(
                status.code or response.status_code,
                status.reason or response.reason_phrase,
                status.message or "",
            )
        try:  # a Status sent as "application/json; charset=utf-8" (lightkube wants it bare)
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("kind") == "Status":
            return cls(
                response.status_code,
                str(body.get("reason") or response.reason_phrase),
                str(body.get("message") or ""),
            )
        return cls(response.status_code, response.reason_phrase, response.text[:500])


def _base64(data: str | bytes) -> str:
    """Certificate data the way a kubeconfig holds it (base64 of PEM), from either form."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.lstrip().startswith(b"-----"):
        raw = base64.b64encode(raw)
    return raw.decode()


def _path(value: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> str | None:
    return os.fsdecode(value) if value else None


def config_from_kopf(info: kopf.ConnectionInfo, *, token_path: str | None = None) -> SingleConfig:
    """A lightkube configuration from kopf's login result. With ``token_path`` the bearer
    token is read from that file, and read again when the API server answers 401 (the
    kubelet rotates projected service-account tokens)."""
    cluster = Cluster(
        server=info.server,
        certificate_auth=_path(info.ca_path),
        certificate_auth_data=_base64(info.ca_data) if info.ca_data else None,
        insecure=bool(info.insecure),
    )
    user = User(
        token=None if token_path else info.token,
        token_file=token_path,
        username=info.username,
        password=info.password,
        client_cert=_path(info.certificate_path),
        client_cert_data=_base64(info.certificate_data) if info.certificate_data else None,
        client_key=_path(info.private_key_path),
        client_key_data=_base64(info.private_key_data) if info.private_key_data else None,
    )
    config = KubeConfig.from_one(cluster=cluster, user=user).get()
    assert config is not None  # from_one sets the current context
    return config


def _resource(api_version: str, kind: str) -> Any:
    """lightkube's generic resource class for a kind (typed ``Any``: lightkube's overloads
    tell namespaced from cluster-scoped classes statically; the table knows at run time)."""
    return resource_for(api_version, kind)[1]


class KubeClient:
    """Apply, get, list, delete and patch plain-dict objects through lightkube."""

    def __init__(
        self,
        config: SingleConfig,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 30.0,
        max_connections: int = 100,
    ) -> None:
        self.field_manager = field_manager
        self._config = config
        self._timeout = httpx2.Timeout(timeout)
        # One pool for the operator's life, every connection in it kept alive: kopf runs
        # handlers of many owners at once, and with httpx's default (20 kept alive of 100)
        # each burst past 20 would open, TLS-handshake and close connections.
        # trust_env=False: the configuration is complete; proxies and CA bundles from the
        # environment do not apply to the API server (kopf does the same).
        assert config.user is not None  # KubeConfig.from_one and kubeconfig files set one
        transport = httpx2.AsyncHTTPTransport(
            verify=client_adapter.verify_cluster(
                config.cluster, config.user, config.abs_file, trust_env=False
            ),
            limits=httpx2.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=60.0,
            ),
            trust_env=False,
        )
        self._api = AsyncClient(
            config,
            timeout=self._timeout,
            field_manager=field_manager,
            trust_env=False,
            transport=transport,
        )

    @classmethod
    def from_kopf(
        cls, info: kopf.ConnectionInfo, *, token_path: str | None = None, **options: Any
    ) -> KubeClient:
        """A client for kopf's login result (see :func:`config_from_kopf`)."""
        return cls(config_from_kopf(info, token_path=token_path), **options)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._api.close()

    @staticmethod
    async def _answer(call: Awaitable[_T], *, missing_ok: bool = False) -> _T | None:
        """Await a lightkube call: 404 as None when ``missing_ok``, errors as KubeApiError."""
        try:
            try:
                return await call
            except KeyError as exc:
                # lightkube 1.0 reads the Content-Type header of an error answer without
                # checking that there is one: the HTTP error is what happened.
                if isinstance(exc.__context__, httpx2.HTTPStatusError):
                    raise exc.__context__ from None
                raise
        except httpx2.HTTPStatusError as exc:
            if missing_ok and exc.response.status_code == 404:
                return None
            raise KubeApiError.from_http(exc) from None

    async def apply(
        self, obj: Mapping[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply ``obj`` (create or update the fields this operator owns)."""
        res = _resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        if subresource not in (None, "status"):
            raise ValueError(f"apply to the {subresource!r} subresource is not supported")
        target = res.Status if subresource == "status" else res
        try:
            result = await self._answer(
                self._api.patch(
                    target,
                    meta["name"],
                    dict(obj),
                    namespace=meta.get("namespace"),
                    patch_type=PatchType.APPLY,
                    force=True,
                )
            )
        except KubeApiError as exc:
            # Say which object: the message ends up in the owner's status conditions.
            subject = f"{obj['kind']} {meta['name']}" + (f" {subresource}" if subresource else "")
            raise KubeApiError(exc.status, exc.reason, f"{subject}: {exc.message}") from None
        assert result is not None
        return dict(result)

    async def server_version(self) -> dict[str, Any] | None:
        """The API server's ``GET /version`` answer (None when it has no such endpoint)."""
        params = client_adapter.ConnectionParams(timeout=self._timeout, trust_env=False)
        async with client_adapter.AsyncClient(self._config, params) as http:
            response = await http.get("/version")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise KubeApiError(response.status_code, response.reason_phrase, response.text[:500])
        answer: dict[str, Any] = response.json()
        return answer

    async def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves this kind now: a list of it (one object at most,
        cluster-wide) is answered; False when it is answered 404."""
        resource = resource_for(api_version, kind)[0]
        root = f"/apis/{api_version}" if resource.group else f"/api/{api_version}"
        params = client_adapter.ConnectionParams(timeout=self._timeout, trust_env=False)
        async with client_adapter.AsyncClient(self._config, params) as http:
            response = await http.get(f"{root}/{resource.plural}", params={"limit": 1})
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise KubeApiError(response.status_code, response.reason_phrase, response.text[:500])
        return True

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        res = _resource(api_version, kind)
        found = await self._answer(
            self._api.get(res, name, namespace=namespace),
            missing_ok=True,
        )
        return None if found is None else dict(found)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind (in ``namespace``, or cluster-wide), optionally by labels."""
        res = _resource(api_version, kind)
        scope = namespace or ("*" if resource_for(api_version, kind)[0].namespaced else None)
        selector: dict[str, Any] | None = dict(labels) if labels else None
        listed = self._api.list(res, namespace=scope, labels=selector)  # "*": all namespaces

        async def collect() -> list[dict[str, Any]]:
            return [dict(item) async for item in listed]

        items = await self._answer(collect())
        assert items is not None
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
        res = _resource(api_version, kind)

        async def delete() -> bool:
            await self._api.delete(res, name, namespace=namespace, cascade=CascadeType(propagation))
            return True

        return bool(await self._answer(delete(), missing_ok=True))

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
        res = _resource(api_version, kind)
        return await self._merge(res, name, namespace, patch)

    async def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str | None, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the ``status`` subresource; None when the object is gone."""
        res = _resource(api_version, kind)
        return await self._merge(res.Status, name, namespace, {"status": status})

    async def _merge(
        self, res: Any, name: str, namespace: str | None, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        patched = await self._answer(
            self._api.patch(
                res, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
            ),
            missing_ok=True,
        )
        return None if patched is None else dict(patched)
