"""Build the ``apiextensions.k8s.io/v1`` CustomResourceDefinition of a KAITO kind."""

from __future__ import annotations

from typing import Any

from kaito_sdk.api import KubeObject, PrinterColumn
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
    subresource and printer columns, all taken from the model and its ``api_info``."""
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
    version: dict[str, Any] = {"name": info.version, "served": True, "storage": True}
    if info.printer_columns:
        version["additionalPrinterColumns"] = [
            _printer_column(column) for column in info.printer_columns
        ]
    version["schema"] = {"openAPIV3Schema": schema}
    if info.status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": {
            "group": info.group,
            "names": names,
            "scope": info.scope,
            "versions": [version],
        },
    }


def _printer_column(column: PrinterColumn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        entry["description"] = column.description
    if column.priority:
        entry["priority"] = column.priority
    return entry
