"""The vLLM launcher's arguments and the middleware it loads into vLLM (no vLLM needed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from kaito_inference.engines.base import AdapterInfo
from kaito_inference.modelsource import ResolvedModel
from kaito_inference.settings import InferenceSettings
from kaito_inference.testing import make_lora_adapter
from kaito_inference.vllm_runtime.launcher import (
    LaunchError,
    build_vllm_argv,
    kv_offload_gib,
    mem_available_bytes,
    vllm_environment,
)
from kaito_inference.vllm_runtime.middleware import QueueLimiter
from kaito_sdk.inference_config import parse_inference_config
from kaito_sdk.presets import resolve_preset


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cpu_defaults_and_user_config_last() -> None:
    settings = InferenceSettings(served_model_name="chat", port=5000, max_running=4)
    config = parse_inference_config("vllm:\n  max-model-len: 1024\n  max-num-seqs: 2\n")
    argv = build_vllm_argv(
        settings,
        resolved=ResolvedModel("/models/smol", "smol"),
        adapters=[],
        config=config,
        extra=["--seed", "3"],
        on_cpu=True,
    )
    assert flag(argv, "--model") == "/models/smol"
    assert flag(argv, "--served-model-name") == "chat"
    assert flag(argv, "--dtype") == "float32"
    assert "--enforce-eager" in argv
    assert flag(argv, "--middleware") == "kaito_inference.vllm_runtime.middleware.QueueLimiter"
    assert "--enable-lora" not in argv
    # extra flags after ours, the user's vllm: map last, so the user wins
    assert argv[-6:] == ["--seed", "3", "--max-model-len", "1024", "--max-num-seqs", "2"]
    assert argv.index("--max-num-seqs") < argv.index("--seed")


def test_adapters_become_lora_modules(tmp_path: Path) -> None:
    adapters = [AdapterInfo("a", tmp_path / "a"), AdapterInfo("b", tmp_path / "b")]
    argv = build_vllm_argv(InferenceSettings(), resolved=ResolvedModel("m", "m"), adapters=adapters)
    assert "--enable-lora" in argv
    start = argv.index("--lora-modules") + 1
    assert argv[start : start + 2] == [f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]


def test_strength_is_ignored_on_vllm_with_a_logged_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="kaito_inference.vllm_runtime.launcher"):
        argv = build_vllm_argv(
            InferenceSettings(),
            resolved=ResolvedModel("m", "m"),
            adapters=[AdapterInfo("a", tmp_path, strength=0.5)],
        )
    start = argv.index("--lora-modules") + 1
    assert argv[start] == f"a={tmp_path}"  # loaded as it is: vLLM has no per-adapter scale
    assert "a (0.5)" in caplog.text
    assert "full strength" in caplog.text


def test_gpu_preset_gets_parallelism_from_the_estimator() -> None:
    preset = resolve_preset("llama-3.1-8b-instruct")
    settings = InferenceSettings(instance_type="Standard_NC48ads_A100_v4", disable_rate_limit=True)
    argv = build_vllm_argv(
        settings, resolved=ResolvedModel(preset.hf_id, preset.name, preset), adapters=[]
    )
    assert flag(argv, "--dtype") == "auto"
    assert "--middleware" not in argv
    assert "--tensor-parallel-size" in argv or "--data-parallel-size" in argv


def test_environment_carries_limits_and_cpu_defaults() -> None:
    settings = InferenceSettings(max_running=3, max_waiting=5, enable_lora_runtime_loading=True)
    env = vllm_environment(settings, {"VLLM_CPU_KVCACHE_SPACE": "8"}, on_cpu=True)
    assert env["KAITO_INFERENCE_MAX_RUNNING"] == "3"
    assert env["KAITO_INFERENCE_MAX_WAITING"] == "5"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "8"  # the operator's value is kept
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def limited_app(release: asyncio.Event) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def slow() -> dict[str, str]:
        await release.wait()
        return {"ok": "yes"}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request) -> dict[str, Any]:
        return {"received": json.loads(await request.body())}

    app.add_middleware(QueueLimiter)
    return app


def test_middleware_answers_429_beyond_the_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path
) -> None:
    monkeypatch.setenv("KAITO_INFERENCE_MAX_RUNNING", "1")
    monkeypatch.setenv("KAITO_INFERENCE_MAX_WAITING", "1")
    monkeypatch.setenv("KAITO_INFERENCE_LORA_ROOT", str(tmp_path))
    make_lora_adapter(tiny_model_dir, tmp_path / "good")

    async def scenario() -> None:
        release = asyncio.Event()
        transport = httpx.ASGITransport(app=limited_app(release))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            busy = [asyncio.create_task(client.post("/v1/chat/completions")) for _ in range(2)]
            await asyncio.sleep(0.1)
            rejected = await client.post("/v1/chat/completions")
            assert rejected.status_code == 429
            assert rejected.json()["error"]["code"] == "rate_limit_exceeded"
            release.set()
            assert [r.status_code for r in await asyncio.gather(*busy)] == [200, 200]
            assert (await client.post("/v1/chat/completions")).status_code == 200

            outside = await client.post(
                "/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/etc"}
            )
            assert outside.status_code == 400
            assert outside.json()["error"]["param"] == "lora_path"
            body = {"lora_name": "good", "lora_path": str(tmp_path / "good")}
            inside = await client.post("/v1/load_lora_adapter", json=body)
            assert inside.status_code == 200
            assert inside.json() == {"received": body}  # the body reaches vLLM unchanged

    asyncio.run(scenario())


GIB = 2**30
MEMINFO = "MemTotal:       32768000 kB\nMemFree:         1000000 kB\nMemAvailable:   16777216 kB\n"


def test_free_host_ram_from_meminfo() -> None:
    assert mem_available_bytes(MEMINFO) == 16 * GIB
    with pytest.raises(LaunchError, match="MemAvailable"):
        mem_available_bytes("MemTotal: 1 kB\n")
    assert kv_offload_gib(16 * GIB, 0.5) == 8.0
    assert kv_offload_gib(10 * GIB, 0.33) == 3.3  # rounded down to 0.01 GiB


def test_gpu_gets_native_kv_offload_of_free_ram_times_ratio() -> None:
    preset = resolve_preset("qwen2.5-coder-32b-instruct")  # 2 x A100: tensor parallel 2
    settings = InferenceSettings(
        instance_type="Standard_NC48ads_A100_v4", kv_cache_cpu_memory_utilization=0.25
    )
    argv = build_vllm_argv(
        settings,
        resolved=ResolvedModel(preset.hf_id, preset.name, preset),
        adapters=[],
        extra=["--seed", "3"],
        mem_available=mem_available_bytes(MEMINFO),
    )
    assert flag(argv, "--tensor-parallel-size") == "2"
    assert flag(argv, "--kv-offloading-backend") == "native"
    # vLLM's size is the total over the tensor-parallel ranks: 16 GiB x 0.25, not / 2
    assert flag(argv, "--kv-offloading-size") == "4.00"
    assert argv.index("--kv-offloading-size") < argv.index("--seed")  # extra flags come last


def test_no_kv_offload_on_cpu_when_off_or_with_data_parallelism() -> None:
    def offload(settings: InferenceSettings, *, on_cpu: bool = False, **kw: Any) -> list[str]:
        argv = build_vllm_argv(settings, adapters=[], on_cpu=on_cpu, mem_available=8 * GIB, **kw)
        return [a for a in argv if a.startswith("--kv-offloading")]

    resolved = ResolvedModel("m", "m")
    assert offload(InferenceSettings(), resolved=resolved) == [
        "--kv-offloading-backend",
        "--kv-offloading-size",
    ]
    assert offload(InferenceSettings(), resolved=resolved, on_cpu=True) == []
    off = InferenceSettings(kv_cache_cpu_memory_utilization=0)
    assert offload(off, resolved=resolved) == []
    preset = resolve_preset("llama-3.1-8b-instruct")  # 2 x A100: data parallel 2
    dp = InferenceSettings(instance_type="Standard_NC48ads_A100_v4")
    assert offload(dp, resolved=ResolvedModel(preset.hf_id, preset.name, preset)) == []
    assert offload(InferenceSettings(), resolved=resolved, extra=["-dp", "2"]) == []
    assert (
        offload(InferenceSettings(), resolved=resolved, extra=["--pipeline-parallel-size=2"]) == []
    )


@pytest.mark.parametrize(
    ("config_text", "extra"),
    [
        ("vllm:\n  kv-offloading-size: 3\n", []),
        ("vllm:\n  kv_transfer_config: {kv_connector: LMCacheConnectorV1, kv_role: kv_both}\n", []),
        ("", ["--kv_offloading_backend=lmcache"]),
    ],
)
def test_the_users_kv_offload_flags_win(config_text: str, extra: list[str]) -> None:
    argv = build_vllm_argv(
        InferenceSettings(),
        resolved=ResolvedModel("m", "m"),
        adapters=[],
        config=parse_inference_config(config_text),
        extra=extra,
        mem_available=8 * GIB,
    )
    assert "--kv-offloading-backend" not in argv
    assert argv.count("--kv-offloading-size") == ("kv-offloading-size" in config_text)
