"""The vLLM runtime: a launcher for vLLM's own OpenAI server, not a fork.

It turns the preset defaults, the estimator's parallelism, the adapters in the adapters
dir and the user's ``inference_config.yaml`` (``vllm:`` map last, so the user wins) into
vLLM arguments, and execs ``python -m vllm.entrypoints.openai.api_server``. The 429 queue
limiter comes in through vLLM's ``--middleware`` extension point. On a GPU, KAITO's CPU
KV-cache offload (``--kaito-kv-cache-cpu-memory-utilization``) becomes vLLM's native
``--kv-offloading-size``.
"""

# ruff: noqa: PLC0415  (torch and the estimator are imported only when launching)

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kaito_inference.engines.adapters import discover_adapters
from kaito_inference.engines.base import AdapterInfo
from kaito_inference.modelsource import ResolvedModel, resolve_model
from kaito_inference.settings import InferenceSettings
from kaito_sdk.inference_config import InferenceConfig, load_inference_config, vllm_args

__all__ = [
    "KV_OFFLOAD_FLAGS",
    "VLLM_MODULE",
    "LaunchError",
    "build_vllm_argv",
    "kv_offload_gib",
    "mem_available_bytes",
    "run_vllm",
    "vllm_environment",
]

log = logging.getLogger(__name__)
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
MIDDLEWARE = "kaito_inference.vllm_runtime.middleware.QueueLimiter"
#: vLLM flags that configure KV offload; when the user passes any, we add none.
KV_OFFLOAD_FLAGS = frozenset(
    {"--kv-offloading-size", "--kv-offloading-backend", "--kv-transfer-config"}
)


class LaunchError(ValueError):
    """The combination of settings, adapters and config cannot be served by vLLM."""


def build_vllm_argv(
    settings: InferenceSettings,
    *,
    resolved: ResolvedModel,
    adapters: list[AdapterInfo],
    config: InferenceConfig | None = None,
    extra: list[str] | None = None,
    on_cpu: bool = False,
    mem_available: int | None = None,
) -> list[str]:
    """vLLM server arguments: ours first, then ``extra`` flags, then the user's ``vllm:`` map.

    ``mem_available`` is the host's free RAM in bytes for the CPU KV-cache offload
    (``None`` reads ``/proc/meminfo`` when the offload applies).
    """
    argv = [
        "--model", resolved.location,
        "--served-model-name", settings.served_model_name or resolved.name,
        "--host", settings.host,
        "--port", str(settings.port),
        "--max-num-seqs", str(settings.max_running),
    ]  # fmt: skip
    dtype = settings.dtype
    if dtype == "auto":  # fp32 beats bf16 on CPUs without AMX/AVX-512
        dtype = "float32" if on_cpu else "auto"
    argv += ["--dtype", dtype]
    if on_cpu:
        argv.append("--enforce-eager")
    if settings.max_model_len:
        argv += ["--max-model-len", str(settings.max_model_len)]
    argv += _preset_flags(resolved)
    argv += _parallelism(settings, resolved, config)
    if adapters or settings.enable_lora_runtime_loading:
        argv.append("--enable-lora")
    if adapters:
        weighted = [f"{a.name} ({a.strength:g})" for a in adapters if a.strength != 1.0]
        if weighted:  # KAITO admits it too; admission warned the user
            log.warning(
                "adapter strength is ignored by the vLLM runtime, which applies LoRA adapters "
                "at full strength (1.0): %s",
                ", ".join(weighted),
            )
        argv += ["--lora-modules", *(f"{a.name}={a.path}" for a in adapters)]
    if not settings.disable_rate_limit:
        argv += ["--middleware", MIDDLEWARE]
    user = list(extra or []) + (vllm_args(config) if config is not None else [])
    argv += _kv_offload_flags(
        settings.kv_cache_cpu_memory_utilization,
        [*argv, *user],
        set(_flag_names(user)),
        on_cpu=on_cpu,
        mem_available=mem_available,
    )
    return argv + user


def mem_available_bytes(meminfo: str) -> int:
    """``MemAvailable`` in bytes, from the text of ``/proc/meminfo``."""
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "MemAvailable":
            value, *unit = rest.split()
            return int(value) * (1024 if unit == ["kB"] else 1)
    raise LaunchError("/proc/meminfo has no MemAvailable line")


def kv_offload_gib(mem_available: int, ratio: float) -> float:
    """vLLM's ``--kv-offloading-size`` for ``ratio`` of free host RAM, GiB rounded down to 0.01.

    KAITO gives each LMCache worker ``free RAM x ratio / tensor-parallel size``; vLLM's
    size is the total over the tensor-parallel ranks (``CacheConfig.kv_offloading_size``),
    so the same host RAM is ``free RAM x ratio``, split by vLLM among the ranks.
    """
    return math.floor(mem_available * ratio / 2**30 * 100) / 100


def _kv_offload_flags(
    ratio: float,
    argv: Sequence[str],
    user_flags: set[str],
    *,
    on_cpu: bool,
    mem_available: int | None,
) -> list[str]:
    """KAITO's CPU KV-cache offload as vLLM native offloading, where it applies."""
    what = "CPU KV-cache offload (--kaito-kv-cache-cpu-memory-utilization)"
    if ratio == 0:
        log.info("%s: off (0)", what)
        return []
    if on_cpu:
        log.info("%s does not apply: vLLM runs on CPU, its KV cache is in host RAM", what)
        return []
    if given := sorted(user_flags & KV_OFFLOAD_FLAGS):
        log.info("%s: not added, the user's %s wins", what, ", ".join(given))
        return []
    data_parallel = _int_flag(argv, "--data-parallel-size", "-dp")
    pipeline_parallel = _int_flag(argv, "--pipeline-parallel-size", "-pp")
    if data_parallel > 1 or pipeline_parallel > 1:  # KAITO's operator turns it off there too
        log.info(
            "%s: off with data parallelism %d / pipeline parallelism %d (each data-parallel "
            "engine would take the whole share; pipeline stages span nodes)",
            what,
            data_parallel,
            pipeline_parallel,
        )
        return []
    if mem_available is None:
        mem_available = mem_available_bytes(Path("/proc/meminfo").read_text(encoding="ascii"))
    size = kv_offload_gib(mem_available, ratio)
    if size <= 0:
        log.info("%s: off, %d bytes of free host RAM", what, mem_available)
        return []
    tensor_parallel = _int_flag(argv, "--tensor-parallel-size", "-tp")
    log.info(
        "%s: %.2f GiB = %.2f GiB free host RAM x %g, %.2f GiB per tensor-parallel rank x %d",
        what,
        size,
        mem_available / 2**30,
        ratio,
        size / tensor_parallel,
        tensor_parallel,
    )
    return ["--kv-offloading-backend", "native", "--kv-offloading-size", f"{size:.2f}"]


def _flag_names(argv: Sequence[str]) -> list[str]:
    """The flags in ``argv``, ``--a_b=1`` read as ``--a-b`` (vLLM accepts both spellings)."""
    names = []
    for token in argv:
        if token.startswith("-"):
            name = token.partition("=")[0]
            names.append("--" + name[2:].replace("_", "-") if name.startswith("--") else name)
    return names


def _int_flag(argv: Sequence[str], *names: str) -> int:
    """The last positive integer given for any of ``names`` in ``argv``, else 1."""
    found = 1
    for index, token in enumerate(argv):
        name, equals, value = token.partition("=")
        if not name.startswith("-") or _flag_names([name])[0] not in names:
            continue
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        if value.isdigit() and int(value) > 0:
            found = int(value)
    return found


def _preset_flags(resolved: ResolvedModel) -> list[str]:
    """The preset's runtime defaults (chat template, parsers, formats) as vLLM flags."""
    argv: list[str] = []
    if resolved.chat_template:
        argv += ["--chat-template", resolved.chat_template]
    if resolved.preset is None:
        return argv
    defaults = resolved.preset.runtime_defaults
    if defaults.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", defaults.tool_call_parser]
    for flag, value in (
        ("--reasoning-parser", defaults.reasoning_parser),
        ("--tokenizer-mode", defaults.tokenizer_mode),
        ("--config-format", defaults.config_format),
        ("--load-format", defaults.load_format),
    ):
        if value:
            argv += [flag, value]
    return argv


def _parallelism(
    settings: InferenceSettings, resolved: ResolvedModel, config: InferenceConfig | None
) -> list[str]:
    """Tensor/pipeline/data parallel sizes from the SDK estimator, for GPU presets."""
    preset = resolved.preset
    if settings.instance_type is None or preset is None or preset.is_cpu:
        return []
    from kaito_sdk.estimator import EstimateError, estimate_nodes

    try:
        estimate = estimate_nodes(
            preset,
            settings.instance_type,
            max_model_len=config.max_model_len() if config else settings.max_model_len,
        )
    except EstimateError as exc:
        raise LaunchError(str(exc)) from None
    argv = ["--tensor-parallel-size", str(estimate.tensor_parallel_size)]
    if estimate.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(estimate.pipeline_parallel_size)]
        argv += ["--distributed-executor-backend", "ray"]
    if estimate.data_parallel_size > 1:
        argv += ["--data-parallel-size", str(estimate.data_parallel_size)]
    return argv


def vllm_environment(
    settings: InferenceSettings, base: Mapping[str, str], *, on_cpu: bool
) -> dict[str, str]:
    """The environment vLLM runs with: the limiter's settings and CPU defaults."""
    env = dict(base)
    env["KAITO_INFERENCE_MAX_RUNNING"] = str(settings.max_running)
    env["KAITO_INFERENCE_MAX_WAITING"] = str(settings.max_waiting)
    env["KAITO_INFERENCE_LORA_ROOT"] = str(settings.lora_allowed_root())
    if settings.enable_lora_runtime_loading:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    if on_cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # small pods: use every core
    return env


def run_vllm(
    settings: InferenceSettings, extra: list[str], config: InferenceConfig | None = None
) -> int:
    """Build the arguments and replace this process with vLLM's server.

    ``config`` is the parsed ``--kaito-config-file`` (read here when not given).
    """
    import torch

    on_cpu = settings.device == "cpu" or (
        settings.device == "auto" and not torch.cuda.is_available()
    )
    if config is None and settings.kaito_config_file:
        config = load_inference_config(settings.kaito_config_file)
    argv = build_vllm_argv(
        settings,
        resolved=resolve_model(settings.model),
        adapters=discover_adapters(settings.adapters_dir),
        config=config,
        extra=extra,
        on_cpu=on_cpu,
    )
    env = vllm_environment(settings, os.environ, on_cpu=on_cpu)
    command = [sys.executable, "-m", VLLM_MODULE, *argv]
    log.info("exec %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)  # noqa: S606 (our own interpreter, fixed module)
    return 0  # pragma: no cover (execve does not return)
