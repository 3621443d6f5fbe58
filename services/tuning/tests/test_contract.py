"""The operator's launch contract (``kaito_sdk.contracts.tuning``) against the real CLI parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_sdk.contracts import tuning as contract
from kaito_sdk.tuning_config import parse_training_config
from kaito_tuning.__main__ import build_parser
from kaito_tuning.settings import TuningSettings

TEMPLATES = Path(__file__).resolve().parents[3] / "presets" / "tuning"


def test_run_argv_with_preset_and_defaults_parses() -> None:
    argv = contract.run_argv(method="lora", preset="smollm2-135m-instruct")
    assert argv[0] == contract.COMMAND == "kaito-tuning"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.method == "lora"
    assert args.preset == "smollm2-135m-instruct"
    assert args.model is None
    assert args.config == Path("/mnt/config/training_config.yaml")
    assert args.input == Path(contract.DATA_DIR) == Path("/mnt/data")
    assert args.output == Path(contract.RESULTS_DIR) == Path("/mnt/results")
    assert args.push is None


def test_run_argv_with_model_dir_output_and_push_parses() -> None:
    text = (TEMPLATES / "qlora-params.yaml").read_text()
    output = parse_training_config(text, method="qlora").training.resolved_output_dir
    argv = contract.run_argv(
        method="qlora",
        model_dir="/workspace/weights",
        output_dir=output,
        push_image="myregistry.azurecr.io/adapters/math:v1",
    )
    args = build_parser().parse_args(argv[1:])
    assert (args.method, args.model) == ("qlora", Path("/workspace/weights"))
    assert args.output == Path("/mnt/results")
    assert args.push == "myregistry.azurecr.io/adapters/math:v1"
    assert args.docker_config == Path("/mnt/docker-config/.dockerconfigjson")
    assert contract.DOCKER_CONFIG_PATH.endswith(contract.DOCKER_CONFIG_FILE)


def test_fetch_argv_parses() -> None:
    urls = ["https://example.com/a.jsonl", "https://example.com/b.parquet?sig=x"]
    args = build_parser().parse_args(contract.fetch_argv(urls)[1:])
    assert args.command == "fetch"
    assert args.urls == urls
    assert args.dest == Path("/mnt/data")


def test_contract_argument_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of preset and model_dir"):
        contract.run_argv(method="lora")
    with pytest.raises(ValueError, match="exactly one of preset and model_dir"):
        contract.run_argv(method="lora", preset="a", model_dir="/b")
    with pytest.raises(ValueError, match="at least one URL"):
        contract.fetch_argv([])


def test_metrics_port_and_config_name_agree_with_the_service() -> None:
    assert TuningSettings().metrics_port == contract.METRICS_PORT
    assert f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE_NAME}" == contract.CONFIG_PATH
    assert contract.CONFIG_FILE_NAME == "training_config.yaml"
