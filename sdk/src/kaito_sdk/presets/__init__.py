"""Model presets: the schema, the packaged catalog and preset-name resolution."""

from kaito_sdk.presets.catalog import (
    CatalogError,
    UnknownPresetError,
    chat_template,
    list_presets,
    load_catalog,
    resolve_preset,
)
from kaito_sdk.presets.schema import (
    CatalogFile,
    CpuResources,
    Preset,
    Quantization,
    Runtime,
    RuntimeDefaults,
)

__all__ = [
    "CatalogError",
    "CatalogFile",
    "CpuResources",
    "Preset",
    "Quantization",
    "Runtime",
    "RuntimeDefaults",
    "UnknownPresetError",
    "chat_template",
    "list_presets",
    "load_catalog",
    "resolve_preset",
]
