"""HTTP request parsing for the API emulator.

kmock cannot parse the cluster-scoped namespace paths (``/api/v1/namespaces[/name]``),
and it tries every body as JSON and then as a form, which costs more than the emulated
API call itself; the emulator parses requests here instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp.web
import kmock
import yaml
from kmock._internal import enums, parsing, rendering

__all__ = ["apply_body", "parse_request"]

#: kmock's resource references are immutable and slow to build: one per resource.
_RESOURCES: dict[tuple[str, str | None, str | None], kmock.resource] = {}

_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?$")


def apply_body(raw: bytes) -> Any:
    """An apply-patch body: YAML, which clients usually send as JSON (parsed much faster)."""
    try:
        return json.loads(raw)
    except ValueError:
        return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


async def parse_request(raw: aiohttp.web.BaseRequest, request_id: int) -> rendering.Request:
    """kmock's request model for ``raw``: the Kubernetes path parsed, a JSON body decoded."""
    body = await raw.read()
    data = None
    if body and raw.content_type != "application/apply-patch+yaml":
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    match = _NAMESPACE_PATH.match(raw.path)
    if match is not None:
        path = parsing.ParsedPath("", "v1", "namespaces", None, match.group(1), match.group(2))
    else:
        path = parsing.parse_path(raw.path)
    resource = None
    if path.group is not None:
        ident = (path.group, path.version, path.plural)
        resource = _RESOURCES.get(ident)
        if resource is None:
            resource = _RESOURCES[ident] = kmock.resource(
                group=path.group, version=path.version, plural=path.plural
            )
    return rendering.Request(
        id=request_id,
        raw_request=raw,
        url=raw.url,
        method=raw.method,
        params=dict(raw.query),
        headers=dict(raw.headers),
        cookies=dict(raw.cookies),
        data=data,
        body=body,
        text=body.decode("utf-8", "replace"),
        action=parsing.guess_k8s(path, enums.method(raw.method), dict(raw.query)),
        resource=resource,
        namespace=path.namespace,
        name=path.name,
        subresource=path.subresource,
    )
