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
from kaito_inference.vllm_launcher import LaunchError, build_vllm_argv, vllm_environment
from kaito_inference.vllm_middleware import QueueLimiter
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
    assert flag(argv, "--middleware") == "kaito_inference.vllm_middleware.QueueLimiter"
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


def test_strength_is_rejected_on_vllm(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="strength"):
        build_vllm_argv(
            InferenceSettings(),
            resolved=ResolvedModel("m", "m"),
            adapters=[AdapterInfo("a", tmp_path, strength=0.5)],
        )


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
