"""LoRA adapters: find them in the adapters dir, check runtime paths, attach them with PEFT."""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kaito_inference.engines.base import AdapterInfo

__all__ = [
    "ADAPTER_NAME",
    "AdapterError",
    "attach_adapter",
    "check_adapter_path",
    "detach_adapter",
    "discover_adapters",
    "is_adapter_dir",
]

log = logging.getLogger(__name__)
#: Names an adapter may be served under (also a safe directory and env var name).
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(ValueError):
    """An adapter name, path or strength is not acceptable; the message names the rule."""


def is_adapter_dir(path: Path) -> bool:
    """Whether ``path`` holds a PEFT adapter (``adapter_config.json`` + safetensors weights)."""
    return all((path / name).is_file() for name in ADAPTER_FILES)


def _strength(name: str, environ: Mapping[str, str]) -> float:
    """KAITO passes each adapter's ``strength`` in an env var named after the adapter."""
    raw = environ.get(name)
    if raw is None:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise AdapterError(f"strength of adapter {name!r} ({raw!r}) is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise AdapterError(f"strength of adapter {name!r} must be between 0 and 1, got {value}")
    return value


def discover_adapters(
    adapters_dir: Path, environ: Mapping[str, str] | None = None
) -> list[AdapterInfo]:
    """Every adapter subdirectory of ``adapters_dir``, served under the subdirectory's name."""
    env = os.environ if environ is None else environ
    if not adapters_dir.is_dir():
        return []
    found: list[AdapterInfo] = []
    for child in sorted(adapters_dir.iterdir()):
        if not child.is_dir() or not is_adapter_dir(child):
            continue
        if not ADAPTER_NAME.match(child.name):
            log.warning("skipping adapter dir %s: not a valid adapter name", child)
            continue
        found.append(AdapterInfo(child.name, child, _strength(child.name, env)))
    return found


def check_adapter_path(name: str, raw_path: str, allowed_root: Path) -> Path:
    """The resolved adapter directory for a runtime load, or :class:`AdapterError`."""
    if not ADAPTER_NAME.match(name):
        raise AdapterError(f"lora_name {name!r} must match {ADAPTER_NAME.pattern}")
    path = Path(raw_path).expanduser().resolve()
    if not path.is_relative_to(allowed_root):
        raise AdapterError(f"lora_path must be inside {allowed_root}")
    if not path.is_dir() or not is_adapter_dir(path):
        raise AdapterError(f"lora_path has no {' and '.join(ADAPTER_FILES)}")
    return path


def attach_adapter(model: Any, adapter: AdapterInfo) -> Any:
    """Load ``adapter`` into ``model`` (wrapping it with PEFT on first use); return the model."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if hasattr(model, "peft_config"):
        model.load_adapter(str(adapter.path), adapter_name=adapter.name)
    else:
        model = PeftModel.from_pretrained(model, str(adapter.path), adapter_name=adapter.name)
    if adapter.strength != 1.0:
        for module in model.modules():
            if isinstance(module, LoraLayer) and adapter.name in module.scaling:
                module.scaling[adapter.name] *= adapter.strength
    model.eval()
    return model


def detach_adapter(model: Any, name: str) -> Any:
    """Remove adapter ``name``; return the plain base model when it was the last one."""
    if set(model.peft_config) == {name}:
        return model.unload()
    model.delete_adapter(name)
    return model
