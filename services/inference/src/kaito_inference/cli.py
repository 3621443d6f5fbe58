"""``kaito-inference serve``: the console script the Workspace pods run."""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from kaito_inference.settings import InferenceSettings

if TYPE_CHECKING:
    from kaito_sdk.inference_config import InferenceConfig

__all__ = [
    "KAITO_FLAGS",
    "apply_kaito_config",
    "build_parser",
    "fatal",
    "listen_socket",
    "main",
    "serve_transformers",
    "settings_from_args",
]

log = logging.getLogger("kaito_inference")

#: Settings fields whose flag has KAITO's ``--kaito-`` name (the rest are ``--<field>``).
KAITO_FLAGS = {
    "instance_type": "--kaito-instance-type",
    "disable_rate_limit": "--kaito-disable-rate-limit",
    "max_probe_steps": "--kaito-max-probe-steps",
    "kv_cache_cpu_memory_utilization": "--kaito-kv-cache-cpu-memory-utilization",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (the operator's launch contract is tested against it)."""
    parser = argparse.ArgumentParser(prog="kaito-inference")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model over the OpenAI API",
        description="Flags override KAITO_INFERENCE_* env vars. With --runtime vllm, flags "
        "this parser does not know are passed to vLLM unchanged.",
    )
    add = serve.add_argument
    s = argparse.SUPPRESS  # unset flags leave the env/default value alone
    add("--runtime", choices=["transformers", "vllm"], default=s)
    add("--model", default=s, help="preset name, model directory or local HF id")
    add("--served-model-name", default=s)
    add("--host", default=s)
    add("--port", type=int, default=s)
    add("--adapters-dir", "--kaito-adapters-dir", dest="adapters_dir", default=s)
    add("--kaito-config-file", dest="kaito_config_file", default=s)
    add("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=s)
    add(
        "--weights",
        choices=["auto", "float32", "bfloat16", "int8", "int4", "w8a8"],
        default=s,
        help="linear weights of the fast CPU decoder (auto: fastest within 2%% perplexity)",
    )
    add(
        "--integer-kernels",
        choices=["auto", "off"],
        default=s,
        help="int4 layers and int8 LM heads on our AVX2 integer dot products with int8 "
        "activations (auto: where a C++ compiler is found; off: torch's kernels)",
    )
    add(
        "--compile-decode",
        choices=["auto", "off"],
        default=s,
        help="compile the fast CPU decoder's decode step with torch inductor (auto: where "
        "a C++ compiler is found)",
    )
    add("--device", default=s, help="auto, cpu, cuda or cuda:N (transformers runtime)")
    add("--max-running", type=int, default=s, help="sequences batched together")
    add("--max-waiting", type=int, default=s, help="queued requests before 429")
    add("--max-prefill-tokens", type=int, default=s, help="uncached prompt tokens per prefill wave")
    add(
        "--prefill-join",
        choices=["on", "off"],
        default=s,
        help="requests arriving during a prefill pass's first half join it (fast CPU decoder)",
    )
    add("--prefix-cache-tokens", type=int, default=s, help="prompt-start tokens kept (0: off)")
    add("--max-model-len", type=int, default=s)
    add(
        "--max-request-body-bytes",
        type=int,
        default=s,
        help="request bodies over this size get 413 (default 16 MiB)",
    )
    add("--enable-lora-runtime-loading", action="store_true", default=s)
    add("--lora-root", default=s, help="runtime-loaded adapters must be under this dir")
    add(
        KAITO_FLAGS["instance_type"],
        dest="instance_type",
        default=s,
        help="GPU SKU of the node; the estimator derives vLLM's parallelism from it",
    )
    add(
        KAITO_FLAGS["disable_rate_limit"], dest="disable_rate_limit", action="store_true", default=s
    )
    add(
        KAITO_FLAGS["max_probe_steps"],
        dest="max_probe_steps",
        default=s,
        help="legacy KAITO flag: accepted (an int >= 0) and ignored",
    )
    add(
        KAITO_FLAGS["kv_cache_cpu_memory_utilization"],
        dest="kv_cache_cpu_memory_utilization",
        default=s,
        help="share (0..1) of free host RAM for vLLM's CPU KV-cache offload on GPUs; "
        "0 disables; wins over the config file's kv_cache_cpu_memory_utilization (default 0.5)",
    )
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def settings_from_args(args: argparse.Namespace) -> InferenceSettings:
    """Settings from the env, overridden by the flags that were given."""
    given: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key not in {"command", "log_level"}
    }
    return InferenceSettings(**given)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kaito-inference`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from kaito_sdk.inference_config import InferenceConfigError, load_inference_config

    try:
        settings = settings_from_args(args)
        config = (
            load_inference_config(settings.kaito_config_file)
            if settings.kaito_config_file
            else None
        )
    except ValidationError as exc:
        parser.error("; ".join(_setting_error(error) for error in exc.errors()))
    except InferenceConfigError as exc:
        parser.error(f"--kaito-config-file: {exc}")
    if extra and settings.runtime != "vllm":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    settings = apply_kaito_config(settings, config)
    if settings.max_probe_steps is not None:
        log.info(
            "%s / max_probe_steps %d is a legacy KAITO option and has no effect",
            KAITO_FLAGS["max_probe_steps"],
            settings.max_probe_steps,
        )
    if settings.runtime == "vllm":
        from kaito_inference.vllm_runtime.launcher import LaunchError, run_vllm

        try:
            return run_vllm(settings, extra, config)
        except LaunchError as exc:
            parser.error(str(exc))
    return serve_transformers(settings)


def _setting_error(error: Any) -> str:
    """``--flag (KAITO_INFERENCE_FIELD): rule`` for one pydantic error."""
    field = str(error["loc"][0]) if error["loc"] else "settings"
    flag = KAITO_FLAGS.get(field, "--" + field.replace("_", "-"))
    return f"{flag} (KAITO_INFERENCE_{field.upper()}): {error['msg']}"


def serve_transformers(settings: InferenceSettings) -> int:
    """Run the transformers runtime until interrupted; 1 when it cannot serve.

    A missing model directory or a taken port ends the process at once (before anything
    heavy is imported); a model that fails to load stops the server and ends it too. Either
    way the cause is the last line on stderr, so a pod's crash loop shows why.
    """
    from kaito_inference.modelsource import ModelSourceError, check_model_dir

    try:
        check_model_dir(settings.model)
    except ModelSourceError as exc:
        return fatal(str(exc))
    try:
        sock = listen_socket(settings.host, settings.port)
    except OSError as exc:
        return fatal(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    import uvicorn

    from kaito_cpu_runtime.threads import configure_cpu_threads
    from kaito_inference.app import create_app
    from kaito_inference.engines.transformers_engine import TransformersEngine
    from kaito_inference.metrics import InferenceMetrics

    configure_cpu_threads()
    if settings.kv_cache_cpu_memory_utilization > 0:
        log.info(
            "%s %g does not apply to the transformers runtime (its KV cache is not offloaded)",
            KAITO_FLAGS["kv_cache_cpu_memory_utilization"],
            settings.kv_cache_cpu_memory_utilization,
        )
    metrics = InferenceMetrics()
    server: uvicorn.Server | None = None

    def stop_serving(_error: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    engine = TransformersEngine(settings, metrics, on_load_failure=stop_serving)
    app = create_app(settings, engine=engine, metrics=metrics)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    log.info("starting the transformers runtime on %s:%d", settings.host, settings.port)
    exit_cleanly_after_stop_signals()
    with sock:
        server.run(sockets=[sock])
    if engine.load_error is not None:
        error = engine.load_error
        return fatal(f"the model failed to load: {type(error).__name__}: {error}")
    return 0


def exit_cleanly_after_stop_signals() -> None:
    """Make a graceful stop end with exit code 0.

    uvicorn handles SIGINT/SIGTERM itself, and once it has shut down it raises the signal
    again with the handlers it found; these handlers turn that into ``SystemExit(0)``, so
    a pod stopped on purpose ends ``Completed`` and Ctrl-C ends quietly, not by the signal.
    """

    def exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, exit_cleanly)


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 when ``host`` has a colon), as uvicorn
    binds it.

    Made with protocol ``IPPROTO_TCP``: asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on connections whose socket says TCP, and with it on, a stream's
    first data chunk after the response headers waited for the client's delayed ACK
    (about 40 ms here on every streamed chat completion)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def fatal(cause: str) -> int:
    """Print ``cause`` as the last line on stderr (one line) and return exit status 1."""
    line = " ".join(part.strip() for part in cause.splitlines() if part.strip())
    print(f"kaito-inference: error: {line}", file=sys.stderr, flush=True)
    return 1


def apply_kaito_config(
    settings: InferenceSettings, config: InferenceConfig | None = None
) -> InferenceSettings:
    """Apply ``inference_config.yaml`` (loaded from ``--kaito-config-file`` when not given).

    Its top-level KAITO keys (``max_probe_steps``, ``kv_cache_cpu_memory_utilization``)
    apply only where no flag or env var set the value, as in KAITO's wrapper: flag, then
    file, then the default. Its ``transformers:`` section overrides the flags (the user's
    file wins) when the runtime is transformers.
    """
    if config is None:
        if settings.kaito_config_file is None:
            return settings
        from kaito_sdk.inference_config import load_inference_config

        config = load_inference_config(settings.kaito_config_file)
    overrides: dict[str, Any] = {}
    for key in ("max_probe_steps", "kv_cache_cpu_memory_utilization"):
        if key in config.model_fields_set and key not in settings.model_fields_set:
            overrides[key] = getattr(config, key)
    if settings.runtime == "transformers":
        overrides.update(config.transformers.model_dump(exclude_none=True))
    return settings.model_copy(update=overrides)


if __name__ == "__main__":
    sys.exit(main())
