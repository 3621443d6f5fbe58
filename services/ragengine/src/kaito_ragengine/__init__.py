"""kaito-ragengine: hybrid FAISS + BM25 retrieval and OpenAI-compatible RAG chat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaito_ragengine.app import create_app
    from kaito_ragengine.settings import Settings

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    """Import ``create_app`` and ``Settings`` on first use, so that ``kaito-ragengine
    serve`` can report a missing dependency or a bad setting itself."""
    if name == "create_app":
        from kaito_ragengine.app import create_app  # noqa: PLC0415

        return create_app
    if name == "Settings":
        from kaito_ragengine.settings import Settings  # noqa: PLC0415

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
