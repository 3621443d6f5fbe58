"""``kaito-inference serve``: the console script the Workspace pods run."""

# ruff: noqa: PLC0415  (heavy or optional imports stay inside the functions that use them)

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from kaito_inference.settings import InferenceSettings

__all__ = ["build_parser", "main", "settings_from_args"]

log = logging.getLogger("kaito_inference")


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
    add("--device", default=s, help="auto, cpu, cuda or cuda:N (transformers runtime)")
    add("--max-running", type=int, default=s, help="sequences batched together")
    add("--max-waiting", type=int, default=s, help="queued requests before 429")
    add("--max-prefill-tokens", type=int, default=s, help="prompt tokens per prefill pass")
    add("--max-model-len", type=int, default=s)
    add("--enable-lora-runtime-loading", action="store_true", default=s)
    add("--lora-root", default=s, help="runtime-loaded adapters must be under this dir")
    add(
        "--kaito-instance-type",
        dest="instance_type",
        default=s,
        help="GPU SKU of the node; the estimator derives vLLM's parallelism from it",
    )
    add("--kaito-disable-rate-limit", dest="disable_rate_limit", action="store_true", default=s)
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
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        parser.error(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}")
    if extra and settings.runtime != "vllm":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if settings.runtime == "vllm":
        from kaito_inference.vllm_launcher import run_vllm

        return run_vllm(settings, extra)
    return serve_transformers(settings)


def serve_transformers(settings: InferenceSettings) -> int:
    """Run the transformers runtime until interrupted."""
    import uvicorn

    from kaito_inference.app import create_app
    from kaito_inference.engines.cpu_threads import configure_cpu_threads

    configure_cpu_threads()
    settings = apply_kaito_config(settings)
    log.info("starting the transformers runtime on %s:%d", settings.host, settings.port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def apply_kaito_config(settings: InferenceSettings) -> InferenceSettings:
    """Apply the ``transformers:`` section of ``inference_config.yaml`` (the user wins)."""
    if settings.kaito_config_file is None:
        return settings
    from kaito_sdk.inference_config import load_inference_config

    config = load_inference_config(settings.kaito_config_file)
    overrides = config.transformers.model_dump(exclude_none=True)
    return settings.model_copy(update=overrides)


if __name__ == "__main__":
    sys.exit(main())
