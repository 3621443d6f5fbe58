"""``kaito-tuning``: the command line of the tuning job.

``kaito-tuning run``  trains an adapter from a training config, an input directory and a
base model (a preset or a model directory), writes it to the output directory and, with
``--push``, pushes it to an OCI registry.
``kaito-tuning fetch`` downloads dataset URLs into the input directory.

Exit status: 0 done, 1 the job failed (data, download, model, registry), 2 bad usage or
an invalid training config. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kaito_sdk.contracts import tuning as contract
from kaito_sdk.tuning_config import TuningConfigError, parse_training_config
from kaito_tuning.settings import TuningSettings

__all__ = ["build_parser", "main"]

logger = logging.getLogger("kaito_tuning")

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (the operator's argv contract is tested against it)."""
    parser = argparse.ArgumentParser(prog=contract.COMMAND, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train an adapter")
    run.add_argument("--method", choices=("lora", "qlora"), type=str.lower, default="lora")
    base = run.add_mutually_exclusive_group(required=True)
    base.add_argument("--preset", help="preset name of the base model")
    base.add_argument("--model", type=Path, help="base model directory")
    run.add_argument("--config", type=Path, default=Path(contract.CONFIG_PATH))
    run.add_argument("--input", type=Path, default=Path(contract.DATA_DIR))
    run.add_argument(
        "--output", type=Path, help="output directory (default: the config's output_dir)"
    )
    run.add_argument("--push", metavar="REFERENCE", help="push the adapter to host/repo:tag")
    run.add_argument("--adapter-name", help="sh.kaito.model.name annotation (default: repo)")
    run.add_argument("--docker-config", type=Path, help="docker config file with credentials")
    run.add_argument("--insecure-registry", action="store_true", help="plain-HTTP registry")
    run.add_argument("--registry-ca", help="CA bundle trusted for the registry's TLS")
    run.add_argument("--metrics-port", type=int, help="override KAITO_TUNING_METRICS_PORT")

    fetch = commands.add_parser("fetch", help="download dataset URLs")
    fetch.add_argument("--url", action="append", required=True, dest="urls")
    fetch.add_argument("--dest", type=Path, default=Path(contract.DATA_DIR))
    return parser


def _model_for_preset(name: str) -> str:
    from kaito_sdk.presets import resolve_preset  # noqa: PLC0415
    from kaito_sdk.tools.localmodels import EMBEDDED_MODEL_NAME, embedded_model_dir  # noqa: PLC0415

    preset = resolve_preset(name)
    if not preset.tunable:
        raise ValueError(f"preset {preset.name!r} does not support tuning")
    if preset.name == EMBEDDED_MODEL_NAME:
        logger.info("model: preset %s is the embedded model (converted on first use)", name)
        return str(embedded_model_dir(progress=False))
    return preset.hf_id


def _run(args: argparse.Namespace, settings: TuningSettings) -> int:
    try:
        text = args.config.read_text(encoding="utf-8")
    except OSError as exc:
        logger.error("cannot read the training config %s: %s", args.config, exc.strerror)
        return EXIT_USAGE
    try:
        config = parse_training_config(text, method=args.method)
    except TuningConfigError as exc:
        logger.error("invalid training config %s: %s", args.config, exc)
        return EXIT_USAGE
    from safetensors import SafetensorError  # noqa: PLC0415

    from kaito_tuning.metrics import TrainingMetrics  # noqa: PLC0415 - heavy (torch)
    from kaito_tuning.trainer import TrainJob, check_hardware, run_training  # noqa: PLC0415

    check_hardware(args.method)
    if args.model is not None and not args.model.is_dir():
        logger.error("--model %s: no such directory", args.model)
        return EXIT_FAILED
    output = args.output or Path(config.training.resolved_output_dir)
    model = str(args.model) if args.model is not None else _model_for_preset(args.preset)
    job = TrainJob(
        config=config, method=args.method, model=model, input_dir=args.input, output_dir=output
    )
    metrics = TrainingMetrics()
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    with contextlib.ExitStack() as serving:
        try:
            serving.enter_context(metrics.serve(settings.metrics_host, port))
        except OSError as exc:
            host = settings.metrics_host
            logger.error("cannot serve /metrics on %s:%d: %s", host, port, exc.strerror or exc)
            return EXIT_FAILED
        try:
            result = run_training(job, metrics=metrics)
        except SafetensorError as exc:  # truncated or corrupt weights (OSError: TuningError)
            logger.error("ModelConfig: cannot load the base model from %r: %s", model, exc)
            return EXIT_FAILED
    if args.push:
        from kaito_sdk.tools.oci import ANNOTATION_MODEL_NAME, push_adapter  # noqa: PLC0415

        name = args.adapter_name or args.push.rsplit("/", 1)[-1].split(":", 1)[0].split("@")[0]
        push_adapter(
            result.adapter_dir,
            args.push,
            model_name=name,
            docker_config=args.docker_config,
            insecure=args.insecure_registry,
            ca_bundle=args.registry_ca,
        )
        logger.info("pushed the adapter to %s (%s=%s)", args.push, ANNOTATION_MODEL_NAME, name)
    return 0


def _fetch(args: argparse.Namespace, settings: TuningSettings) -> int:
    from kaito_tuning.fetch import fetch_all  # noqa: PLC0415

    written = fetch_all(args.urls, args.dest, settings=settings)
    logger.info("fetch: %d file(s) in %s", len(written), args.dest)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kaito-tuning`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = TuningSettings()
    try:
        return _run(args, settings) if args.command == "run" else _fetch(args, settings)
    except ValueError as exc:  # data errors, unknown presets, unsafe URLs, bad references
        logger.error("%s", exc)
        return EXIT_FAILED
    except RuntimeError as exc:  # TuningError, FetchError, OciError, EmbeddedModelError
        logger.error("%s", exc)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
