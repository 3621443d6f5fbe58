"""Shared fixtures: offline mode, the tiny random model, the real embedded SmolLM2, and
this machine's CPU flags (for tests whose result depends on a CPU feature)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaito_sdk.tools.localmodels import build_tiny_model, embedded_model_dir

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see the engine
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a ChatML template (fast, meaningless output)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once into the user cache."""
    return embedded_model_dir(progress=False)


@pytest.fixture(scope="session")
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags from ``/proc/cpuinfo``."""
    from kaito_cpu_runtime.linear import cpu_flags as read  # noqa: PLC0415  (loads torch)

    return read()
