"""Turn a pydantic model's JSON schema into a Kubernetes *structural* schema.

Rules (kube-rs's schema rewriter is the checklist):

* ``$ref`` is inlined from ``$defs``; the field's own keys (its description) win;
* ``title`` and ``default`` are dropped, and so is ``additionalProperties: false``
  (``extra="forbid"``; the API server prunes unknown fields instead);
* ``X | None`` becomes ``X``; ``const`` becomes a one-value ``enum``;
* ``int | str`` becomes ``x-kubernetes-int-or-string: true``;
* a free-form ``dict[str, Any]`` becomes ``type: object`` with
  ``x-kubernetes-preserve-unknown-fields: true``;
* descriptions (from field docstrings) are kept on one line, with reST ````code````
  turned into Markdown backticks as ``kubectl explain`` shows them.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

__all__ = ["StructuralSchemaError", "structural_schema"]

Schema = dict[str, Any]
_DROPPED_KEYS: Final = frozenset({"title", "default", "$defs"})
# Key order in the generated YAML: what a reader looks for first comes first.
_KEY_ORDER: Final = {
    "description": 0,
    "type": 1,
    "format": 2,
    "enum": 3,
    "properties": 20,
    "items": 21,
    "additionalProperties": 22,
    "required": 30,
}


class StructuralSchemaError(ValueError):
    """The model's JSON schema has a shape a structural schema cannot express."""


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model`` (wire names, no ``$ref``)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Schema] = raw.get("$defs", {})
    return _rewrite(raw, definitions, "")


def _rewrite(node: Schema, definitions: dict[str, Schema], path: str) -> Schema:
    node = _inline(node, definitions, path)
    node = _collapse_unions(node, definitions, path)
    result: Schema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            result[key] = {
                name: _rewrite(child, definitions, f"{path}.{name}")
                for name, child in value.items()
            }
        elif key == "items":
            result[key] = _rewrite(value, definitions, f"{path}[]")
        elif key == "additionalProperties":
            result.update(_additional_properties(node, definitions, path))
        elif key == "const":
            result["enum"] = [value]
        elif key == "description":
            result[key] = " ".join(value.replace("``", "`").split())
        else:
            result[key] = value
    if "type" not in result and not result.get("x-kubernetes-int-or-string"):
        raise StructuralSchemaError(f"schema node {path or '(root)'} has no type: {node}")
    return dict(sorted(result.items(), key=lambda item: _KEY_ORDER.get(item[0], 10)))


def _additional_properties(node: Schema, definitions: dict[str, Schema], path: str) -> Schema:
    """``additionalProperties``: a typed map stays; a free-form one preserves unknown
    fields; ``false`` (and ``true`` next to ``properties``) is dropped."""
    value = node["additionalProperties"]
    if isinstance(value, dict) and value:
        return {"additionalProperties": _rewrite(value, definitions, f"{path}{{}}")}
    if value == {} or (value is True and "properties" not in node):
        return {"x-kubernetes-preserve-unknown-fields": True}
    return {}


def _inline(node: Schema, definitions: dict[str, Schema], path: str) -> Schema:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.rsplit("/", 1)[-1]
    if name not in definitions:
        raise StructuralSchemaError(f"{path}: unresolved reference {ref}")
    siblings = {key: value for key, value in node.items() if key != "$ref"}
    return {**definitions[name], **siblings}


def _collapse_unions(node: Schema, definitions: dict[str, Schema], path: str) -> Schema:
    options = node.get("anyOf") or node.get("oneOf")
    if options is None:
        return node
    outer = {key: value for key, value in node.items() if key not in ("anyOf", "oneOf")}
    variants = [_inline(option, definitions, path) for option in options]
    variants = [v for v in variants if v.get("type") != "null"]
    types = sorted(str(v.get("type")) for v in variants)
    if len(variants) == 1:
        inner = variants[0]
        merged = {**inner, **outer}
        return _collapse_unions(merged, definitions, path)
    if types == ["integer", "string"]:
        return {**outer, "x-kubernetes-int-or-string": True}
    raise StructuralSchemaError(f"{path}: unions other than X | None and int | str: {options}")
