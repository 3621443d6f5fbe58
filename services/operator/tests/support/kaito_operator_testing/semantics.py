"""Pure object semantics of the Kubernetes API server, as the emulator applies them.

Label and field selectors, JSON merge patch (RFC 7386), the server-side-apply merge, and
the rules for what a write may change. No I/O: the emulator in
:mod:`kaito_operator_testing.emulator` wires these into HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = [
    "FieldRequirement",
    "LabelRequirement",
    "SelectorError",
    "apply_merge",
    "clone",
    "field_paths",
    "matches_fields",
    "matches_labels",
    "merge_patch",
    "parse_field_selector",
    "parse_label_selector",
    "spec_changed",
]

#: Top-level keys that are not part of an object's desired state (``generation`` ignores them).
NON_SPEC_KEYS = frozenset({"apiVersion", "kind", "metadata", "status"})

_SET_RE = re.compile(r"^\s*(!?)([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([\w./-]+)\s*(==|!=|=)\s*([\w./-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)([\w./-]+)\s*$")


def clone(value: _T) -> _T:
    """A deep copy of a JSON-like value (a JSON round trip: several times faster than
    ``copy.deepcopy`` on API objects, which are JSON by definition)."""
    copied: _T = json.loads(json.dumps(value))
    return copied


class SelectorError(ValueError):
    """A label or field selector that does not parse."""


@dataclass(frozen=True)
class LabelRequirement:
    """One clause of a label selector: ``key op values``."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this clause."""
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case "=":
                return present and value == self.values[0]
            case "!=":
                return not present or value != self.values[0]
            case "in":
                return present and value in self.values
            case "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case _:
                return not present


@dataclass(frozen=True)
class FieldRequirement:
    """One clause of a field selector (``metadata.name=x``)."""

    path: tuple[str, ...]
    equal: bool
    value: str


def _split_clauses(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            yield text[start:index]
            start = index + 1
    yield text[start:]


def parse_label_selector(text: str) -> list[LabelRequirement]:
    """Parse the ``labelSelector`` query syntax (``a=b,c!=d,e in (x,y),!f``)."""
    requirements: list[LabelRequirement] = []
    for clause in _split_clauses(text):
        if not clause.strip():
            continue
        if match := _SET_RE.match(clause):
            if match.group(1):
                raise SelectorError(f"invalid label selector clause {clause!r}")
            values = tuple(v.strip() for v in match.group(4).split(",") if v.strip())
            requirements.append(LabelRequirement(match.group(2), match.group(3), values))
        elif match := _EQ_RE.match(clause):
            operator = "!=" if match.group(2) == "!=" else "="
            requirements.append(LabelRequirement(match.group(1), operator, (match.group(3),)))
        elif match := _EXISTS_RE.match(clause):
            operator = "!exists" if match.group(1) else "exists"
            requirements.append(LabelRequirement(match.group(2), operator))
        else:
            raise SelectorError(f"invalid label selector clause {clause!r}")
    return requirements


def matches_labels(obj: Mapping[str, Any], requirements: list[LabelRequirement]) -> bool:
    """Whether the object's labels satisfy every requirement."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(requirement.matches(labels) for requirement in requirements)


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """Parse the ``fieldSelector`` query syntax (``metadata.name=x,status.phase!=Done``)."""
    requirements: list[FieldRequirement] = []
    for clause in text.split(","):
        if not clause.strip():
            continue
        match = _EQ_RE.match(clause)
        if match is None:
            raise SelectorError(f"invalid field selector clause {clause!r}")
        path = tuple(match.group(1).split("."))
        requirements.append(FieldRequirement(path, match.group(2) != "!=", match.group(3)))
    return requirements


def matches_fields(obj: Mapping[str, Any], requirements: list[FieldRequirement]) -> bool:
    """Whether the object's fields satisfy every requirement (missing fields compare as "")."""
    for requirement in requirements:
        node: Any = obj
        for part in requirement.path:
            node = node.get(part) if isinstance(node, Mapping) else None
        actual = "" if node is None else str(node)
        if (actual == requirement.value) != requirement.equal:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, ``None`` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return clone(patch) if isinstance(patch, list) else patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def field_paths(config: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every path to a leaf of ``config`` (lists count as leaves: they are applied atomically)."""
    paths: set[tuple[str, ...]] = set()
    for key, value in config.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            paths |= field_paths(value, path)
        else:
            paths.add(path)
    return paths


def _deep_merge(target: dict[str, Any], config: Mapping[str, Any]) -> None:
    for key, value in config.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = clone(value)


def _remove_path(target: dict[str, Any], path: tuple[str, ...]) -> None:
    parents: list[tuple[dict[str, Any], str]] = []
    node: Any = target
    for part in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop containers the removal left empty
        if parent[key] == {}:
            del parent[key]


def apply_merge(
    current: Mapping[str, Any], applied: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Server-side apply for one field manager.

    Fields the manager applied before but no longer applies are removed; then the new
    configuration is merged in (maps merge key by key, lists are replaced as a whole).
    Fields set by other writers are kept. Ownership conflicts are not modelled: every
    apply behaves as ``force=true``.
    """
    result = clone(dict(current))
    if previous is not None:
        for path in field_paths(previous) - field_paths(applied):
            _remove_path(result, path)
    _deep_merge(result, applied)
    return result


def spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a write changed the desired state (anything but metadata and status)."""
    keys = (set(old) | set(new)) - NON_SPEC_KEYS
    return any(old.get(key) != new.get(key) for key in keys)
