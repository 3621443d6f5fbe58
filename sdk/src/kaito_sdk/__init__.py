"""kaito-sdk: the single source of truth for KAITO's API, presets and contracts."""

__version__ = "0.1.0"

__all__ = ["__version__"]
