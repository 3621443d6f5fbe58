"""Build the ``apiextensions.k8s.io/v1`` CustomResourceDefinition of a KAITO kind."""

from __future__ import annotations

import copy
from typing import Any

from kaito_sdk.api import ApiInfo, KubeObject, PrinterColumn
from kaito_sdk.crd.schema import structural_schema

__all__ = ["build_crd"]

_ROOT_FIELDS = {
    "apiVersion": {
        "type": "string",
        "description": "Versioned schema of this object (group/version).",
    },
    "kind": {"type": "string", "description": "Kind of this object."},
    "metadata": {"type": "object"},
}


def build_crd(model: type[KubeObject]) -> dict[str, Any]:
    """The CustomResourceDefinition for ``model``: its structural schema, names, status
    and scale subresources and printer columns, all taken from the model and its
    ``api_info``.

    Every served version carries the same schema: the older versions are served, the
    model's ``version`` is the storage version, and ``conversion: None`` (the API server
    only rewrites ``apiVersion``) is all the conversion identical schemas need.
    """
    info = model.api_info
    schema = structural_schema(model)
    properties = schema["properties"]
    for name, root_schema in _ROOT_FIELDS.items():
        properties[name] = dict(root_schema)
    schema["required"] = [
        name for name in schema.get("required", []) if name not in ("apiVersion", "kind")
    ]
    if not schema["required"]:
        del schema["required"]
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    if info.categories:
        names["categories"] = list(info.categories)
    versions = [
        _version(info, name, schema, storage=name == info.version)
        for name in (*info.older_versions, info.version)
    ]
    spec: dict[str, Any] = {
        "group": info.group,
        "names": names,
        "scope": info.scope,
        "versions": versions,
    }
    if info.older_versions:
        spec["conversion"] = {"strategy": "None"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": spec,
    }


def _version(info: ApiInfo, name: str, schema: dict[str, Any], *, storage: bool) -> dict[str, Any]:
    version: dict[str, Any] = {"name": name, "served": True, "storage": storage}
    if not storage and info.older_versions_warning:
        version["deprecated"] = True
        version["deprecationWarning"] = info.older_versions_warning
    if info.printer_columns:
        version["additionalPrinterColumns"] = [
            _printer_column(column) for column in info.printer_columns
        ]
    version["schema"] = {"openAPIV3Schema": copy.deepcopy(schema)}
    subresources: dict[str, Any] = {}
    if info.status_subresource:
        subresources["status"] = {}
    if info.scale_subresource is not None:
        scale = info.scale_subresource
        subresources["scale"] = {
            "specReplicasPath": scale.spec_replicas_path,
            "statusReplicasPath": scale.status_replicas_path,
        }
        if scale.label_selector_path:
            subresources["scale"]["labelSelectorPath"] = scale.label_selector_path
    if subresources:
        version["subresources"] = subresources
    return version


def _printer_column(column: PrinterColumn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        entry["description"] = column.description
    if column.priority:
        entry["priority"] = column.priority
    return entry
