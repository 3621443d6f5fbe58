"""``kaito-inference serve`` flags, env settings and the transformers part of the config file."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from kaito_inference import cli
from kaito_inference.cli import (
    apply_kaito_config,
    build_parser,
    listen_socket,
    main,
    settings_from_args,
)
from kaito_inference.settings import InferenceSettings


def settings(argv: list[str]):  # type: ignore[no-untyped-def]  # returns the CLI's private settings type
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


def test_config_file_sets_the_weight_format(tmp_path: Path) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text("transformers:\n  weights: int8\n")
    applied = apply_kaito_config(settings(["--kaito-config-file", str(config)]))
    assert applied.weights == "int8"
    config.write_text("transformers:\n  weights: int3\n")
    with pytest.raises(ValueError, match=r"transformers\.weights"):
        apply_kaito_config(settings(["--kaito-config-file", str(config)]))


def test_bad_input_exits_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--port", "0"])
    assert "--port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--enable-prefix-caching"])  # a vLLM flag on the transformers runtime
    assert "unrecognized arguments: --enable-prefix-caching" in capsys.readouterr().err


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> InferenceSettings:
    """``main`` up to the point where it would start the transformers server."""
    served: list[InferenceSettings] = []
    monkeypatch.setattr(cli, "serve_transformers", lambda s: served.append(s) or 0)
    assert main(["serve", *argv]) == 0
    return served[0]


def test_legacy_max_probe_steps_is_accepted_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="kaito_inference")
    assert run_main(["--kaito-max-probe-steps", "6"], monkeypatch).max_probe_steps == 6
    legacy = [r for r in caplog.records if "legacy" in r.getMessage()]
    assert len(legacy) == 1
    assert legacy[0].levelno == logging.INFO
    caplog.clear()
    config = tmp_path / "inference_config.yaml"
    config.write_text("max_probe_steps: 3\n")
    assert run_main(["--kaito-config-file", str(config)], monkeypatch).max_probe_steps == 3
    assert len([r for r in caplog.records if "legacy" in r.getMessage()]) == 1
    caplog.clear()
    assert run_main([], monkeypatch).max_probe_steps is None
    assert not [r for r in caplog.records if "legacy" in r.getMessage()]


def test_kv_offload_ratio_flag_then_env_then_file_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text("kv_cache_cpu_memory_utilization: 0.2\n")
    from_file = ["--kaito-config-file", str(config)]

    def ratio(argv: list[str]) -> float:
        return run_main(argv, monkeypatch).kv_cache_cpu_memory_utilization

    assert ratio([]) == 0.5
    assert ratio(from_file) == 0.2
    assert ratio([*from_file, "--kaito-kv-cache-cpu-memory-utilization=0"]) == 0.0
    monkeypatch.setenv("KAITO_INFERENCE_KV_CACHE_CPU_MEMORY_UTILIZATION", "0.3")
    assert ratio(from_file) == 0.3
    assert ratio([*from_file, "--kaito-kv-cache-cpu-memory-utilization", "0.7"]) == 0.7


KV_FLAG = "--kaito-kv-cache-cpu-memory-utilization"
PROBE_FLAG = "--kaito-max-probe-steps"


@pytest.mark.parametrize(
    ("argv", "env", "named", "rule"),
    [
        ([KV_FLAG, "1.5"], {}, KV_FLAG, "less than or equal to 1"),
        ([KV_FLAG, "-0.1"], {}, KV_FLAG, "greater than or equal to 0"),
        ([f"{KV_FLAG}=nan"], {}, KV_FLAG, "finite number"),
        ([PROBE_FLAG, "-1"], {}, PROBE_FLAG, "greater than or equal to 0"),
        ([PROBE_FLAG, "two"], {}, PROBE_FLAG, "valid integer"),
        (
            [],
            {"KAITO_INFERENCE_MAX_PROBE_STEPS": "1.5"},
            "KAITO_INFERENCE_MAX_PROBE_STEPS",
            "integer",
        ),
    ],
)
def test_bad_kaito_values_name_the_flag_and_the_rule(
    argv: list[str],
    env: dict[str, str],
    named: str,
    rule: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    assert rule in err
    assert "Traceback" not in err


def test_bad_config_file_values_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text("kv_cache_cpu_memory_utilization: 2\nmax_probe_steps: -3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--kaito-config-file", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--kaito-config-file" in err
    assert "kv_cache_cpu_memory_utilization: Input should be less than or equal to 1" in err
    assert "max_probe_steps: Input should be greater than or equal to 0" in err


def test_served_connections_send_small_writes_at_once() -> None:
    """Accepted connections have Nagle's algorithm off (``TCP_NODELAY``): asyncio sets it
    only where the listening socket says TCP, and without it a stream's first data chunk
    after the headers waited for the client's delayed ACK (about 40 ms)."""
    sock = listen_socket("127.0.0.1", 0)

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server_side = writer.get_extra_info("socket")
            seen.set_result(server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accept, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
