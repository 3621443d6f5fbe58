"""``kaito-inference serve`` flags, env settings and the transformers part of the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_inference.cli import apply_kaito_config, build_parser, main, settings_from_args


def settings(argv: list[str]):  # type: ignore[no-untyped-def]
    args, extra = build_parser().parse_known_args(["serve", *argv])
    assert extra == []
    return settings_from_args(args)


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_INFERENCE_PORT", "6000")
    monkeypatch.setenv("KAITO_INFERENCE_MAX_RUNNING", "3")
    assert settings([]).port == 6000
    assert settings([]).max_running == 3
    assert settings(["--port", "7000"]).port == 7000
    assert settings(["--kaito-adapters-dir", "/a"]).adapters_dir == Path("/a")


def test_defaults_match_kaito() -> None:
    defaults = settings([])
    assert defaults.runtime == "transformers"
    assert defaults.port == 5000
    assert defaults.adapters_dir == Path("/mnt/adapter")
    assert defaults.model is None
    assert not defaults.enable_lora_runtime_loading


def test_config_file_transformers_section_wins(tmp_path: Path) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text(
        "vllm:\n  max-model-len: 99\ntransformers:\n  max-running: 4\n  max-model-len: 512\n"
    )
    applied = apply_kaito_config(
        settings(["--kaito-config-file", str(config), "--max-running", "9"])
    )
    assert applied.max_running == 4
    assert applied.max_model_len == 512


def test_bad_input_exits_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--port", "0"])
    assert "--port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--enable-prefix-caching"])  # a vLLM flag on the transformers runtime
    assert "unrecognized arguments: --enable-prefix-caching" in capsys.readouterr().err
