"""``kaito up FILE.yaml``: run a Workspace's workload here (see :mod:`kaito_cli.local_up`)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["up_command"]


def _abort(message: str) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}"
    )
    return typer.Exit(code=1)


def up_command(
    file: Annotated[Path, typer.Argument(help="A Workspace manifest (one YAML document).")],
    *,
    port: Annotated[int, typer.Option(help="Local port of the inference server.")] = 5000,
    model_dir: Annotated[
        Path | None, typer.Option(help="Local model directory instead of the preset's weights.")
    ] = None,
    adapters_dir: Annotated[
        Path | None, typer.Option(help="Directory of adapter subdirectories to serve.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Local inference_config.yaml / training_config.yaml (the ConfigMap)."),
    ] = None,
    input_dir: Annotated[
        Path | None, typer.Option("--input", help="Tuning data directory.")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output", help="Where the tuning job writes the adapter.")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Working directory (default: a new temporary one).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands instead of running them.")
    ] = False,
) -> None:
    """Run a Workspace locally: inference serves on a local port, tuning writes an adapter."""
    from kaito_cli.local_up import (  # noqa: PLC0415
        LocalOptions,
        LocalRunError,
        default_workdir,
        plan_local_run,
        run_plan,
    )
    from kaito_sdk.api import Workspace, load_yaml  # noqa: PLC0415 (pydantic models: lazy)
    from kaito_sdk.validation import validate  # noqa: PLC0415

    try:
        objects = load_yaml(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _abort(f"{file}: {err}") from None
    if len(objects) != 1 or not isinstance(objects[0], Workspace):
        raise _abort(f"{file}: expected exactly one Workspace")
    workspace = objects[0]
    errors = validate(workspace)
    if errors:
        raise _abort("; ".join(str(error) for error in errors))
    name = workspace.metadata.name or "workspace"
    options = LocalOptions(
        workdir=workdir or default_workdir(name),
        port=port,
        model_dir=model_dir,
        adapters_dir=adapters_dir,
        config=config,
        input_dir=input_dir,
        output_dir=output_dir,
    )
    try:
        plan = plan_local_run(workspace, options)
    except LocalRunError as err:
        raise _abort(str(err)) from None
    console = Console(highlight=False, soft_wrap=True)
    for argv in plan.steps:
        console.print(f"$ {shlex.join(argv)}", markup=False)
    if dry_run:
        return
    if plan.url:
        console.print(f"starting {name}; it will serve at {plan.url}", markup=False)

    def ready(seconds: float) -> None:
        console.print(
            f"ready: {name} serves at {plan.url} after {seconds:.1f} s (Ctrl-C stops it)",
            markup=False,
        )

    try:
        outcome = run_plan(plan, on_ready=ready)
    except LocalRunError as err:
        raise _abort(str(err)) from None
    if outcome.code not in (0, 130, 143):
        program = Path(outcome.argv[0]).name
        last = "\n".join(outcome.tail[-10:])
        raise _abort(f"{program} exited with code {outcome.code}; its last lines:\n{last}")
    if plan.output_dir is not None and outcome.code == 0:
        console.print(f"adapter written to {plan.output_dir}", markup=False)
    raise typer.Exit(code=outcome.code)
