"""Adapter discovery, KAITO's per-adapter strength, and runtime path checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from kaito_inference.engines.adapters import (
    AdapterError,
    attach_adapter,
    check_adapter_path,
    detach_adapter,
    discover_adapters,
)
from kaito_inference.testing import make_lora_adapter


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    make_lora_adapter(tiny_model_dir, root / "alpha", seed=5)
    (root / "not-an-adapter").mkdir()
    (root / "stray-file.txt").write_text("x")
    return root


def logits(model: torch.nn.Module, adapter: str | None = None) -> torch.Tensor:
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    kwargs = {"adapter_names": [adapter or "__base__"]} if hasattr(model, "peft_config") else {}
    with torch.inference_mode():
        return model(input_ids=ids, **kwargs).logits


def test_discovery_serves_adapter_subdirs_only(adapters: Path) -> None:
    found = discover_adapters(adapters, environ={})
    assert [(a.name, a.strength) for a in found] == [("alpha", 1.0)]
    assert discover_adapters(adapters / "missing", environ={}) == []


@pytest.mark.parametrize(("raw", "message"), [("2", "between 0 and 1"), ("lots", "not a number")])
def test_bad_strength_names_the_adapter(adapters: Path, raw: str, message: str) -> None:
    with pytest.raises(AdapterError, match=f"'alpha'.*{message}"):
        discover_adapters(adapters, environ={"alpha": raw})


def test_strength_scales_the_adapter(adapters: Path, tiny_model_dir: Path) -> None:
    def model_with(strength: str) -> torch.nn.Module:
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        (adapter,) = discover_adapters(adapters, environ={"alpha": strength})
        return attach_adapter(base, adapter)

    base_logits = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    full = logits(model_with("1"), "alpha")
    half = logits(model_with("0.5"), "alpha")
    zero = logits(model_with("0"), "alpha")
    torch.testing.assert_close(zero, base_logits)
    assert not torch.allclose(full, base_logits)
    # LoRA adds scaling * B(A(x)) to each target projection: half strength lies in between.
    assert 0 < (half - base_logits).abs().mean() < (full - base_logits).abs().mean()


def test_detaching_the_last_adapter_restores_the_base(adapters: Path, tiny_model_dir: Path) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    reference = logits(base)
    (adapter,) = discover_adapters(adapters, environ={})
    model = detach_adapter(attach_adapter(base, adapter), "alpha")
    assert not hasattr(model, "peft_config")
    torch.testing.assert_close(logits(model), reference)


def test_runtime_paths_must_stay_under_the_root(adapters: Path, tmp_path: Path) -> None:
    root = adapters.resolve()
    assert check_adapter_path("a", str(adapters / "alpha"), root) == root / "alpha"
    (tmp_path / "link").symlink_to(adapters / "alpha")
    with pytest.raises(AdapterError, match="inside"):
        check_adapter_path("a", str(tmp_path / "link"), tmp_path.resolve())  # link escapes
    with pytest.raises(AdapterError, match=r"adapter_config\.json"):
        check_adapter_path("a", str(adapters / "not-an-adapter"), root)
    with pytest.raises(AdapterError, match="lora_name"):
        check_adapter_path("../a", str(adapters / "alpha"), root)
