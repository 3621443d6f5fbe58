"""The ``kaito`` command line: presets, GPU SKUs, node estimates and manifest validation.

Other installed packages add subcommands through the entry-point group ``kaito.cli``:
each entry point names a callable ``register(app: typer.Typer) -> None`` that adds its
commands to the app (the operator adds ``kaito render``). A plugin that fails to load
is skipped with a warning on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from kaito_cli.cli_up import up_command
from kaito_sdk.estimator import EstimateError, estimate_nodes
from kaito_sdk.presets import Preset, UnknownPresetError, list_presets
from kaito_sdk.skus import list_skus

__all__ = ["PLUGIN_GROUP", "build_app", "load_plugins", "main"]

PLUGIN_GROUP = "kaito.cli"
"""Entry-point group whose callables ``register(app)`` add subcommands."""


def _console(*, soft_wrap: bool = True) -> Console:
    """Stdout console; text lines never wrap (copy-paste friendly), tables fit the width."""
    return Console(highlight=False, soft_wrap=soft_wrap)


def _error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    _error_console().print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code=1)


def _params(count: int | None) -> str:
    if count is None:
        return "?"
    if count >= 999_500_000:
        return f"{count / 10**9:.1f}B"
    return f"{count / 10**6:.0f}M"


def _context(tokens: int | None) -> str:
    if tokens is None:
        return "?"
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


def _runtimes(preset: Preset) -> str:
    return ", ".join(
        f"{runtime.value}*" if runtime is preset.default_runtime else runtime.value
        for runtime in preset.runtimes
    )


def _notes(preset: Preset) -> str:
    flags = [
        ("cpu", preset.is_cpu),
        ("gated", preset.gated),
        ("deprecated", preset.deprecated),
        (preset.quantization.method if preset.quantization else "", preset.quantization),
    ]
    return ", ".join(name for name, on in flags if on)


#: Narrow preset table: longer HF ids break after the org, and notes that would make a
#: line longer go on their own line.
_NARROW_ID_WIDTH = 40


def _presets_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    family: Annotated[str | None, typer.Option(help="Only this family (qwen, llama...).")] = None,
) -> None:
    """List the model presets: name, Hugging Face id, size, context, runtimes, tunable."""
    presets = [p for p in list_presets() if family is None or p.family == family.lower()]
    if as_json:
        rows = [
            p.model_dump(mode="json")
            | {
                "bytes_per_token": p.bytes_per_token,
                "disk_storage_requirement": p.disk_storage_requirement,
            }
            for p in presets
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    console = _console(soft_wrap=False)
    table = _preset_table(presets, wide=True)
    unlimited = console.options.update_width(10**4)
    if Measurement.get(console, unlimited, table).maximum > console.width:
        # Too narrow for one line per preset: the HF id moves under the name.
        table = _preset_table(presets, wide=False)
    console.print(table)


def _preset_table(presets: list[Preset], *, wide: bool) -> Table:
    """One row per preset; the narrow form puts HF id and notes under the name."""
    table = Table(
        title=f"KAITO presets ({len(presets)})",
        caption="* default runtime",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("name" if wide else "name / HF id (notes)", no_wrap=True)
    if wide:
        table.add_column("HF id", no_wrap=True)
    for column in ("params", "GiB", "context" if wide else "ctx"):
        table.add_column(column, justify="right", no_wrap=True)
    for column in ("runtimes", "tunable" if wide else "tune", *(("notes",) if wide else ())):
        table.add_column(column, no_wrap=True)
    for p in presets:
        size = "?" if p.weight_size_gib is None else f"{p.weight_size_gib:.2f}"
        notes = _notes(p)
        if wide:
            first, last = [p.name, p.hf_id], [notes]
        else:
            hf_id = p.hf_id if len(p.hf_id) <= _NARROW_ID_WIDTH else p.hf_id.replace("/", "/\n")
            last_line = hf_id.rpartition("\n")[2]
            joiner = " " if len(last_line) + len(notes) + 3 <= _NARROW_ID_WIDTH else "\n"
            second = f"{hf_id}{joiner}({notes})" if notes else hf_id
            first, last = [f"{escape(p.name)}\n[dim]{escape(second)}[/]"], []
        table.add_row(
            *first,
            _params(p.parameters),
            size,
            _context(p.context_length),
            _runtimes(p),
            "yes" if p.tunable else "no",
            *last,
        )
    return table


def _skus_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the GPU instance types the estimator and validation know."""
    skus = list_skus()
    if as_json:
        rows = [
            {
                "name": s.name,
                "cloud": s.cloud.value,
                "gpu_model": s.gpu_model,
                "gpu_count": s.gpu_count,
                "gpu_memory_gib": s.gpu_memory_gib,
            }
            for s in skus
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"GPU instance types ({len(skus)})")
    for column in ("instance type", "cloud", "GPU"):
        table.add_column(column)
    for column in ("GPUs", "GiB per GPU"):
        table.add_column(column, justify="right")
    for s in skus:
        table.add_row(s.name, s.cloud.value, s.gpu_model, str(s.gpu_count), str(s.gpu_memory_gib))
    _console(soft_wrap=False).print(table)


def _estimate_command(
    model: Annotated[str, typer.Argument(help="Preset name, legacy alias or HF id org/model.")],
    instance_type: Annotated[
        str, typer.Option("--instance-type", "-i", help="GPU SKU, e.g. Standard_NC24ads_A100_v4.")
    ],
    max_model_len: Annotated[
        int | None,
        typer.Option(help="Context length to reserve KV cache for (default 2048 tokens)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How many nodes of a GPU SKU a model needs, its tensor/pipeline parallel sizes, and why."""
    try:
        result = estimate_nodes(model, instance_type, max_model_len=max_model_len)
    except (EstimateError, UnknownPresetError) as err:
        raise _fail(str(err)) from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    console = _console()
    console.print(f"[bold]{escape(result.preset)}[/] on [bold]{result.instance_type}[/]")
    console.print(
        f"  nodes: {result.node_count}   GPUs: {result.total_gpus} "
        f"({result.gpus_per_node} x {result.gpu_model} per node)"
    )
    console.print(
        f"  tensor parallel: {result.tensor_parallel_size}   "
        f"pipeline parallel: {result.pipeline_parallel_size}   "
        f"data parallel: {result.data_parallel_size}"
    )
    console.print("why:")
    for line in result.explanation:
        console.print(f"  {line}", markup=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def _read_documents(file: str) -> list[Any] | None:
    """The non-empty YAML documents of ``file`` (``-`` is stdin); None after printing why not."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        _error_console().print(f"{file}: cannot read: {reason}", markup=False)
        return None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        _error_console().print(f"{file}: not valid YAML{where}: {problem}", markup=False)
        return None
    if not documents:
        _error_console().print(f"{file}: no YAML documents", markup=False)
        return None
    return documents


def _validate_command(
    files: Annotated[list[str], typer.Argument(help="Manifest files (YAML, multi-document ok).")],
) -> None:
    """Check KAITO manifests against KAITO's rules; exit 1 on any error.

    Other kinds in a file (ConfigMap, Secret, PVC, Deployment...) are passed over with a
    note; a ConfigMap a Workspace of the file names as its inference or tuning config is
    checked against that config's schema. Warnings are printed and do not fail the file.
    """
    # pydantic models: imported lazily, so `kaito presets` starts fast
    from kaito_sdk.validation.documents import check_documents  # noqa: PLC0415

    console, failed = _console(), False
    for file in files:
        documents = _read_documents(file)
        if documents is None:
            failed = True
            continue
        for report in check_documents(documents):
            label = f"{file} document {report.number} ({report.kind} {report.name})"
            if report.errors:
                failed = True
                summary = f"{len(report.errors)} error(s)"
            elif any("passed over" in note for note in report.notes):
                summary = "passed over"
            else:
                summary = "valid"
            if report.warnings:
                summary += f", {len(report.warnings)} warning(s)"
            console.print(f"{label}: {summary}", markup=False)
            for error in report.errors:
                console.print(f"  {error}", markup=False)
            for warning in report.warnings:
                console.print(f"  warning: {warning}", markup=False)
            for note in report.notes:
                console.print(f"  note: {note}", markup=False)
    if failed:
        raise typer.Exit(code=1)


def _plugin_entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=PLUGIN_GROUP)


def load_plugins(app: typer.Typer, plugins: Iterable[EntryPoint] | None = None) -> list[str]:
    """Let every ``kaito.cli`` entry point register its commands; return the loaded names.

    A plugin that fails to import or to register is skipped with a warning on stderr.
    """
    loaded: list[str] = []
    for entry in _plugin_entry_points() if plugins is None else plugins:
        try:
            register: Callable[[typer.Typer], None] = entry.load()
            register(app)
        except Exception as err:  # a broken plugin must not break the CLI
            _error_console().print(
                f"[yellow]warning:[/] skipped CLI plugin {escape(repr(entry.name))} "
                f"({escape(entry.value)}): {type(err).__name__}: {escape(str(err))}"
            )
            continue
        loaded.append(entry.name)
    return loaded


def build_app(*, plugins: bool = True) -> typer.Typer:
    """The ``kaito`` Typer app with the built-in commands and, unless disabled, plugins."""
    app = typer.Typer(
        name="kaito",
        help="KAITO toolkit: model presets, GPU sizing and manifest validation.",
        no_args_is_help=True,
        add_completion=False,
    )
    app.command("presets")(_presets_command)
    app.command("skus")(_skus_command)
    app.command("estimate")(_estimate_command)
    app.command("validate")(_validate_command)
    app.command("up")(up_command)
    if plugins:
        load_plugins(app)
    return app


def main() -> None:
    """Console-script entry point of ``kaito``."""
    build_app()()
