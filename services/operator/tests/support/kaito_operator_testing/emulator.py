"""A Kubernetes API emulator for the operator's tests, built on ``kmock``.

:class:`KubernetesEmulator` subclasses kmock's emulator and adds what the operator and
kopf rely on: ``resourceVersion``/``uid``/``generation``/``creationTimestamp``; label and
field selectors on list and watch; watch resumption from a ``resourceVersion``; 201 on
create; the ``status`` subresource isolated from the main resource; PUT; JSON, merge and
server-side-apply patches; finalizers and ``deletionTimestamp``; ownerReference garbage
collection; cluster-scoped namespaces (``/api/v1/namespaces``); CRDs registered from YAML.

kmock's DSL still works on top: a test may intercept any request
(``emulator['patch', kmock.resource('apps', 'v1', 'statefulsets')] << 409``) before the
emulated behaviour runs.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, rendering

from kaito_operator_testing import semantics
from kaito_operator_testing.requests import apply_body, parse_request
from kaito_operator_testing.semantics import clone
from kaito_operator_testing.store import ObjectStore, api_error

__all__ = ["KubernetesEmulator", "resource_key"]

_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
#: The bus event that ends the watches of a withdrawn resource (never sent to a client).
_WITHDRAWN = "kaito-test-withdrawn"
_PATCH_KINDS = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "merge",
    "application/apply-patch+yaml": "apply",
}


def resource_key(api_version: str, plural: str) -> kmock.resource:
    """kmock's resource reference for an ``apiVersion`` and a ``plural``."""
    group, _, version = api_version.rpartition("/")
    return kmock.resource(group, version, plural)


@attrs.define(kw_only=True)
class KubernetesEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API server semantics the operator relies on."""

    _state: ObjectStore = attrs.field(init=False)
    _direct: dict[str, Any] = attrs.field(factory=dict, init=False)
    _own_payloads: int = attrs.field(default=0, init=False)
    _served: set[tuple[str | None, str | None, str | None]] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        with warnings.catch_warnings():  # kmock 0.8 uses a deprecated importlib.resources call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        self._state = ObjectStore(self.resources)
        # Direct dispatch: kmock matches a request against its reactions by scanning every
        # request served so far, which is quadratic, and renders each answer through generic
        # payload interpretation; while a test has added no reactions of its own, object
        # requests go straight to the same functions and answer as JSON (watches stream
        # through kmock).
        self.fallback[enums.action.WATCH] << self._serve_watch
        for action, serve in (
            (enums.action.LIST, self._serve_list),
            (enums.action.FETCH, self._serve_fetch),
            (enums.action.CREATE, self._serve_create),
            (enums.action.UPDATE, self._serve_update),
            (enums.action.DELETE, self._serve_delete),
        ):
            self.fallback[action] << serve
            self._direct[action.value] = serve
        self.fallback[enums.method.PUT] << self._serve_replace
        self._direct["PUT"] = self._serve_replace
        self._own_payloads = len(self._payloads)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        self._state.objects[("", "namespaces", None, "default")] = self._state.stamp_new(namespace)

    # ----------------------------------------------------------------- registration
    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve a CustomResourceDefinition (every served version) and store the CRD object."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = (
                kmock.ResourceInfo(
                    kind=names["kind"],
                    singular=names.get("singular") or names["kind"].lower(),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    verbs=set(_VERBS),
                    shortnames=set(names.get("shortNames", [])),
                    categories=set(names.get("categories", [])),
                    subresources=set(version.get("subresources", {})),
                )
            )
        key = ("apiextensions.k8s.io", "customresourcedefinitions", None, crd["metadata"]["name"])
        self._state.objects[key] = self._state.stamp_new(clone(dict(crd)))

    async def withdraw_crd(self, name: str) -> None:
        """Stop serving a registered CRD's resources, as a restarting API server does for
        a moment or while a CRD is deleted: lists, watches and reads of them are answered
        404, and open watches of them end. The CRD object and the objects stay;
        :meth:`register_crd` serves them again."""
        key = ("apiextensions.k8s.io", "customresourcedefinitions", None, name)
        spec = self._state.objects[key]["spec"]
        plural = spec["names"]["plural"]
        for version in spec["versions"]:
            ref = resource_key(f"{spec['group']}/{version['name']}", plural)
            if ref in self.resources:
                del self.resources[ref]
            self._served.discard((spec["group"], version["name"], plural))
        await self._state.buses[(spec["group"], plural)].put({"type": _WITHDRAWN})

    def register_crd_file(self, path: str | Path) -> None:
        """Register every CRD in a (multi-document) YAML file."""
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                self.register_crd(doc)

    def register_resource(
        self, api_version: str, plural: str, kind: str, *, namespaced: bool, status: bool = True
    ) -> None:
        """Serve a resource that is neither built in nor given as a CRD (e.g. Karpenter's)."""
        self.resources[resource_key(api_version, plural)] = kmock.ResourceInfo(
            kind=kind,
            singular=kind.lower(),
            namespaced=namespaced,
            verbs=set(_VERBS),
            subresources={"status"} if status else set(),
        )

    # ----------------------------------------------------------------- direct access for tests
    def read_object(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The stored object (a copy), or None."""
        group = api_version.rpartition("/")[0]
        obj = self._state.objects.get((group, plural, namespace, name))
        return clone(obj) if obj is not None else None

    def list_objects(
        self, api_version: str, plural: str, namespace: str | None = None, *, labels: str = ""
    ) -> list[dict[str, Any]]:
        """Stored objects of a resource (copies, by name), filtered by namespace and labels."""
        selector = semantics.parse_label_selector(labels)
        objs = self._state.select(resource_key(api_version, plural), namespace, selector, [])
        return sorted(objs, key=lambda obj: str(obj["metadata"]["name"]))

    @property
    def recorded_requests(self) -> list[rendering.Request]:
        """Every request served so far (kmock records them), oldest first."""
        return list(self._requests)

    async def create_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj`` as a client would (POST)."""
        ref = resource_key(obj["apiVersion"], self._plural_for(obj))
        async with self._state.lock:
            created = await self._state.create(
                ref, obj.get("metadata", {}).get("namespace"), dict(obj)
            )
        return clone(created)

    async def patch_object(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch an object (or its ``status``), as a kubelet or controller would."""
        async with self._state.lock:
            patched = await self._state.patch(
                resource_key(api_version, plural),
                namespace=namespace,
                name=name,
                subresource=subresource,
                kind="merge",
                body=clone(dict(patch)),
                params={},
            )
        return clone(patched)

    async def delete_object(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> None:
        """Delete an object (honouring finalizers, cascading to dependents)."""
        async with self._state.lock:
            await self._state.delete(
                resource_key(api_version, plural), namespace, name, "Background"
            )

    def _plural_for(self, obj: Mapping[str, Any]) -> str:
        group = obj["apiVersion"].rpartition("/")[0]
        for ref in self.resources:
            if ref.group == group and self.resources[ref].kind == obj["kind"] and ref.plural:
                return str(ref.plural)
        raise KeyError(f"no resource serves {obj['apiVersion']} {obj['kind']}")

    # ----------------------------------------------------------------- HTTP entry
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Serve one HTTP request.

        Requests are parsed here rather than by kmock: kmock cannot parse the cluster-scoped
        namespace paths, and it tries every body as JSON and then as a form, which costs
        more than the emulated API call itself.
        """
        streamed: aiohttp.web.StreamResponse | None = None
        try:
            request = await parse_request(raw_request, len(self._requests))
            self._requests.append(request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as exc:  # a watch failed after its headers
                streamed = exc.args[0]
                raise exc.__cause__ or exc from None
        except Exception as exc:
            if not self._errors:
                raise
            self._errors[-1].append(exc)
            if streamed is None or not streamed.prepared:
                return await self._render_error(exc)
            await self._stream_error(exc, streamed)
            await streamed.write_eof()
            return streamed

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Skip kmock's own state keeping: every state change happens in the fallbacks below,
        # so a test reaction that intercepts a request also prevents its effect.
        if len(self._payloads) == self._own_payloads and request.resource is not None:
            key = (
                "PUT"
                if request.method == enums.method.PUT
                else getattr(request.action, "value", "")
            )
            serve = self._direct.get(key) if request.resource.plural else None
            if serve is not None:
                result = await serve(request)
                status = 200
                if isinstance(result, rendering.Response):
                    status, result = result.status or 200, result.payload
                return aiohttp.web.Response(
                    body=json.dumps(result).encode(), status=status, content_type="application/json"
                )
        return await kmock.RawHandler._handle(self, request)

    # ----------------------------------------------------------------- fallbacks
    def _check_resource(self, request: rendering.Request) -> kmock.resource:
        ref = request.resource
        if ref is None:
            raise kmock.KubernetesResourceNotFoundError()
        ident = (ref.group, ref.version, ref.plural)
        if ident not in self._served:  # kmock's lookup is slow; served resources stay served
            if ref not in self.resources:
                raise kmock.KubernetesResourceNotFoundError()
            self._served.add(ident)
        return ref

    def _selectors(
        self, request: rendering.Request
    ) -> tuple[list[semantics.LabelRequirement], list[semantics.FieldRequirement]]:
        try:
            labels = semantics.parse_label_selector(request.params.get("labelSelector", ""))
            fields = semantics.parse_field_selector(request.params.get("fieldSelector", ""))
        except semantics.SelectorError as exc:
            raise api_error(400, "BadRequest", str(exc)) from None
        return labels, fields

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        ref = self._check_resource(request)
        labels, fields = self._selectors(request)
        async with self._state.lock:
            items = self._state.select(ref, request.namespace, labels, fields)
            revision = self._state.revision
        api_version = f"{ref.group}/{ref.version}" if ref.group else str(ref.version)
        return {
            "apiVersion": api_version,
            "kind": f"{self.resources[ref].kind or ''}List",
            "metadata": {"resourceVersion": str(revision)},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        ref = self._check_resource(request)
        labels, fields = self._selectors(request)
        bus = self._state.buses[(str(ref.group), str(ref.plural))]
        timeout = float(request.params.get("timeoutSeconds") or 0) or None

        def wanted(event: Mapping[str, Any]) -> bool:
            meta = event["object"].get("metadata", {})
            return (
                (request.namespace is None or meta.get("namespace") == request.namespace)
                and (request.name is None or meta.get("name") == request.name)
                and semantics.matches_labels(event["object"], labels)
                and semantics.matches_fields(event["object"], fields)
            )

        yield b""  # send the headers now, even if nothing happens
        async with self._state.lock:
            mark = await bus.mark()
            initial = self._state.initial_events(
                ref, request.namespace, labels, fields, request.params.get("resourceVersion", "")
            )
        try:
            for event in initial:
                if event.get("type") == "ERROR" or wanted(event):
                    yield event
            async with asyncio.timeout(timeout):
                async for event in bus.stream(since=mark):
                    if event.get("type") == _WITHDRAWN:
                        return  # the resource is no longer served: the stream ends
                    if wanted(event):
                        yield event
        except TimeoutError:
            return
        finally:
            await bus.unmark(mark)

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        ref = self._check_resource(request)
        obj = self._state.objects.get(self._state.key(ref, request.namespace, str(request.name)))
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError()
        return obj  # serialised before anything else runs

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        ref = self._check_resource(request)
        if not isinstance(request.data, dict):
            raise api_error(400, "BadRequest", "the request body must be a JSON object")
        async with self._state.lock:
            created = await self._state.create(ref, request.namespace, request.data)
        return rendering.Response(status=201, payload=created)

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        ref = self._check_resource(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        kind = _PATCH_KINDS.get(content_type)
        if kind is None:
            raise api_error(415, "UnsupportedMediaType", f"unsupported patch {content_type!r}")
        body: Any = apply_body(request.body) if kind == "apply" else request.data
        manager = request.params.get("fieldManager", "")
        if kind == "apply" and not manager:
            raise api_error(400, "BadRequest", "fieldManager is required for apply patch")
        async with self._state.lock:
            key = self._state.key(ref, request.namespace, str(request.name))
            if kind == "apply" and key not in self._state.objects and not request.subresource:
                if not isinstance(body, dict):
                    raise api_error(400, "BadRequest", "the apply body must be an object")
                created = await self._state.create(ref, request.namespace, body)
                self._state.applied[(key, manager, "")] = self._state.applied_part(body, None)
                return rendering.Response(status=201, payload=created)
            patched = await self._state.patch(
                ref,
                namespace=request.namespace,
                name=str(request.name),
                subresource=request.subresource,
                kind=kind,
                body=body,
                params=request.params,
            )
        # kmock keeps a reaction's last status, so this reaction always names its status.
        return rendering.Response(status=200, payload=patched)

    async def _serve_replace(self, request: rendering.Request) -> rendering.Payload:
        ref = self._check_resource(request)
        if request.name is None or not isinstance(request.data, dict):
            raise api_error(405, "MethodNotAllowed", "PUT needs an object URL and a JSON body")
        async with self._state.lock:
            return await self._state.patch(
                ref,
                namespace=request.namespace,
                name=request.name,
                subresource=request.subresource,
                kind="replace",
                body=request.data,
                params={},
            )

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        ref = self._check_resource(request)
        options = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or options.get("propagationPolicy")
        async with self._state.lock:
            return await self._state.delete(
                ref, request.namespace, str(request.name), policy or "Background"
            )
