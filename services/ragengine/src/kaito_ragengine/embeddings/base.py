"""The embedder protocol and the row normalisation every backend applies.

This module imports no backend: ``factory`` picks one from the settings, so the backends
(``local``, ``remote``) can import ``normalize`` from here without a cycle.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "normalize"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows (cosine = inner product)."""

    model_id: str
    """Identifies the model; snapshots record it and refuse to load under another."""

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One normalised row per text."""
        ...

    async def aclose(self) -> None:
        """Release threads and connections."""
        ...


def normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)
