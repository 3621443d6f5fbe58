"""The default parameter ConfigMaps: generated from presets/, not drifted, and valid."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from kaito_sdk.inference_config import CONFIG_KEY, parse_inference_config, vllm_args
from kaito_sdk.tuning_config import CONFIG_FILE_NAME, parse_training_config

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> Any:
    """Import tools/gen_chart_configmaps.py (tools/ is a folder of scripts)."""
    path = ROOT / "tools" / "gen_chart_configmaps.py"
    spec = importlib.util.spec_from_file_location("kaito_tools_gen_chart_configmaps", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def configmap(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one ConfigMap {name}, found {len(found)}"
    return found[0]


def test_generated_templates_are_up_to_date() -> None:
    stale = gen.check(ROOT)
    assert not stale, f"run: python tools/gen_chart_configmaps.py write ({stale})"


def test_drift_is_detected(tmp_path: Path) -> None:
    for item in gen.GENERATED:
        for rel in (item.source, item.target):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, tmp_path / rel)
    assert gen.check(tmp_path) == []
    source = tmp_path / gen.GENERATED[0].source
    source.write_text(source.read_text().replace("r: 8", "r: 16"))
    assert gen.check(tmp_path) == [gen.GENERATED[0].target]
    gen.write(tmp_path)
    assert gen.check(tmp_path) == []


def test_template_delimiters_in_a_source_are_refused(tmp_path: Path) -> None:
    item = gen.GENERATED[0]
    (tmp_path / item.source).parent.mkdir(parents=True)
    (tmp_path / item.source).write_text("training_config: {{ .Values.x }}\n")
    with pytest.raises(ValueError, match="template delimiters"):
        gen.render(item, tmp_path)


@pytest.mark.parametrize("item", gen.GENERATED, ids=lambda item: item.name)
def test_rendered_configmap_holds_the_source_text(render: Any, item: Any) -> None:
    data = configmap(render("kaito-workspace"), item.name)["data"]
    assert data == {item.key: (ROOT / item.source).read_text()}


@pytest.mark.parametrize(("name", "method"), [("lora", "lora"), ("qlora", "qlora")])
def test_tuning_defaults_parse_with_the_sdk(render: Any, name: str, method: str) -> None:
    data = configmap(render("kaito-workspace"), f"{name}-params-template")["data"]
    config = parse_training_config(data[CONFIG_FILE_NAME], method=method)
    assert config.quantization.quantized is (method == "qlora")


def test_inference_defaults_parse_with_the_sdk(render: Any) -> None:
    data = configmap(render("kaito-workspace"), "inference-params-template")["data"]
    config = parse_inference_config(data[CONFIG_KEY])
    assert config.vllm
    assert vllm_args(config)[0].startswith("--")


def test_default_configmaps_can_be_turned_off(render: Any) -> None:
    objects = render("kaito-workspace", values={"defaultConfigMaps.enabled": "false"})
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
