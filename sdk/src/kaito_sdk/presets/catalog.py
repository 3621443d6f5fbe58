"""The model catalog: loading ``presets/models/*.yaml`` and resolving preset names.

The YAML ships inside the package (``kaito_sdk/presets/data`` links to the repository's
``presets/`` directory and the wheel carries copies), so an installed SDK needs no
checkout. The catalog is read and validated once per process.
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from kaito_sdk.presets.schema import CatalogFile, Preset, Runtime

__all__ = [
    "CatalogError",
    "UnknownPresetError",
    "chat_template",
    "data_dir",
    "list_presets",
    "load_catalog",
    "resolve_preset",
]

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class CatalogError(ValueError):
    """A catalog file is malformed or two presets claim the same name."""


class UnknownPresetError(ValueError):
    """A preset name matches no catalog entry and is not an ``org/model`` id."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown preset {name!r}: not a catalog name or alias, and not a Hugging Face "
            f"id of the form org/model{hint} (run `kaito presets` for the list)"
        )


def data_dir() -> Path:
    """The directory that holds ``models/`` and ``chat_templates/``."""
    return Path(__file__).resolve().parent / "data"


def _load_file(path: Path) -> list[Preset]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = CatalogFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as err:
        raise CatalogError(f"{path.name}: {err}") from err
    return [model.model_copy(update={"family": parsed.family}) for model in parsed.models]


def load_catalog(directory: Path | None = None) -> dict[str, Preset]:
    """Read and validate every ``*.yaml`` under ``directory`` (default: the packaged catalog).

    Returns presets by name, in file order. Raises :class:`CatalogError` when a file
    breaks the schema or a name, alias or HF id is claimed twice. The packaged catalog is
    cached; an explicit directory is read afresh.
    """
    if directory is None:
        return dict(_packaged_catalog())
    return _read_catalog(directory)


@functools.cache
def _packaged_catalog() -> dict[str, Preset]:
    return _read_catalog(data_dir() / "models")


def _read_catalog(directory: Path) -> dict[str, Preset]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise CatalogError(f"no preset files (*.yaml) under {directory}")
    presets: dict[str, Preset] = {}
    owner: dict[str, str] = {}
    for path in files:
        for preset in _load_file(path):
            for key in preset.all_names:
                if key in owner and owner[key] != preset.name:
                    msg = f"{path.name}: {key!r} of {preset.name!r} is already {owner[key]!r}"
                    raise CatalogError(msg)
                if key == preset.name and key in presets:
                    raise CatalogError(f"{path.name}: preset {key!r} is defined twice")
                owner[key] = preset.name
            presets[preset.name] = preset
    return presets


@functools.cache
def _index() -> dict[str, Preset]:
    """Every lower-case name a catalog preset answers to (name, alias, HF id)."""
    return {key: p for p in _packaged_catalog().values() for key in p.all_names}


def list_presets() -> list[Preset]:
    """Every catalog preset, in catalog order."""
    return list(_packaged_catalog().values())


def resolve_preset(name: str) -> Preset:
    """The preset a Workspace's ``preset.name`` refers to.

    Resolution follows KAITO: the name is lower-cased and looked up among preset names,
    legacy aliases and catalog HF ids. A name of the form ``org/model`` that the catalog
    lacks gives a best-effort preset (vLLM runtime, ``best_effort=True``, unknown
    metadata left ``None``; nothing is fetched). Anything else raises
    :class:`UnknownPresetError` with close matches.
    """
    key = name.strip().lower()
    found = _index().get(key)
    if found is not None:
        return found
    stripped = name.strip()
    if _HF_ID.match(stripped):
        return Preset(
            name=key,
            hf_id=stripped,
            runtimes=(Runtime.VLLM,),
            default_runtime=Runtime.VLLM,
            best_effort=True,
        )
    suggestions = difflib.get_close_matches(key, list(_index()), n=5, cutoff=0.6)
    raise UnknownPresetError(name, suggestions)


def chat_template(name: str) -> str:
    """The text of the chat template ``presets/chat_templates/<name>.jinja``.

    Raises ``ValueError`` for a name that is not a plain template name (no paths) and
    ``FileNotFoundError`` when the template does not exist.
    """
    if not _TEMPLATE_NAME.match(name) or ".." in name:
        raise ValueError(f"chat template name {name!r} must be a plain name like 'falcon'")
    return (data_dir() / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")
