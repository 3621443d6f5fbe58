"""``kaito up``: run a Workspace's workload on this machine as local processes.

An inference Workspace becomes a ``kaito-inference serve`` process on a local port; a
tuning Workspace becomes ``kaito-tuning fetch`` (for URL inputs) followed by
``kaito-tuning run`` writing the adapter to a local directory. The command lines come
from the same launch contracts the operator uses (:mod:`kaito_sdk.contracts`), with the
pod's mount paths replaced by local directories. The CLI imports no service: it starts
their console scripts, which must be installed (``pip install kaito-inference`` /
``kaito-tuning``).

Only what can run on a CPU-only machine is accepted: CPU presets (the embedded default),
or any preset with ``--model-dir`` pointing at a local model directory.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kaito_sdk.api import Workspace
from kaito_sdk.contracts.inference import InferenceLaunch
from kaito_sdk.contracts.tuning import fetch_argv, run_argv
from kaito_sdk.labels import ANNOTATION_RUNTIME
from kaito_sdk.presets import Preset, resolve_preset
from kaito_sdk.presets.catalog import data_dir

__all__ = [
    "LocalOptions",
    "LocalPlan",
    "LocalRunError",
    "StepOutcome",
    "default_workdir",
    "plan_local_run",
    "run_plan",
]


class LocalRunError(ValueError):
    """The Workspace cannot run locally; the message says which field and why."""


@dataclass(frozen=True)
class LocalOptions:
    """Local replacements for what the cluster would provide."""

    workdir: Path
    """Where fetched data, adapter links and (by default) tuning output go."""
    port: int = 5000
    """Local port of the inference server."""
    host: str = "127.0.0.1"
    """Interface the inference server binds."""
    model_dir: Path | None = None
    """A local model directory to use instead of the preset's weights."""
    adapters_dir: Path | None = None
    """A directory of adapter subdirectories (replaces ``inference.adapters``)."""
    config: Path | None = None
    """A local ``inference_config.yaml`` / ``training_config.yaml`` (replaces the ConfigMap)."""
    input_dir: Path | None = None
    """Tuning data directory (replaces ``tuning.input``)."""
    output_dir: Path | None = None
    """Where the tuning job writes the adapter (replaces ``tuning.output``)."""


@dataclass(frozen=True)
class LocalPlan:
    """The processes ``kaito up`` starts, in order; the last one is the workload."""

    kind: str
    """``inference`` or ``tuning``."""
    steps: list[list[str]] = field(default_factory=list)
    """Argv of each process; all but the last must exit 0 before the next starts."""
    adapter_links: dict[str, Path] = field(default_factory=dict)
    """Adapter name -> local directory, linked under the adapters dir before starting."""
    adapters_dir: Path | None = None
    """The adapters directory the server reads (links are created in it)."""
    output_dir: Path | None = None
    """Tuning only: where the adapter will be."""
    url: str | None = None
    """Inference only: the OpenAI base URL once the server is up."""
    health_url: str | None = None
    """Inference only: the server's ``/health`` probe."""


@dataclass(frozen=True)
class StepOutcome:
    """How the last process ``kaito up`` ran ended."""

    argv: list[str]
    """Its command line."""
    code: int
    """Its exit code (130 after Ctrl-C)."""
    tail: list[str]
    """The last lines it printed (stdout and stderr together)."""


def _host_path(volume: dict[str, object] | None, field_path: str) -> Path:
    host = volume.get("hostPath") if volume else None
    if not isinstance(host, dict) or not isinstance(host.get("path"), str):
        raise LocalRunError(
            f"{field_path}: only hostPath volumes can be used locally; "
            "pass a local directory with the matching option instead"
        )
    return Path(str(host["path"]))


def _model_for(preset: Preset, options: LocalOptions, field_path: str) -> str:
    if options.model_dir is not None:
        if not options.model_dir.is_dir():
            raise LocalRunError(f"--model-dir: {options.model_dir} is not a directory")
        return str(options.model_dir)
    if not preset.is_cpu:
        raise LocalRunError(
            f"{field_path}: preset {preset.name!r} needs a GPU; kaito up runs CPU presets "
            "(such as smollm2-135m-instruct) or a local model directory given with --model-dir"
        )
    return preset.name


def _plan_inference(workspace: Workspace, options: LocalOptions) -> LocalPlan:
    inference = workspace.inference
    assert inference is not None
    if inference.template is not None or inference.preset is None:
        raise LocalRunError(
            "inference.template: a custom pod template runs only on a cluster; "
            "kaito up needs inference.preset"
        )
    preset = resolve_preset(inference.preset.name)
    annotations = workspace.metadata.annotations or {}
    runtime = annotations.get(ANNOTATION_RUNTIME, "transformers")
    if runtime not in ("transformers", "vllm"):
        raise LocalRunError(f"metadata.annotations[{ANNOTATION_RUNTIME}]: unknown runtime")
    links: dict[str, Path] = {}
    adapters_dir = options.adapters_dir
    if adapters_dir is None and inference.adapters:
        adapters_dir = options.workdir / "adapters"
        for index, adapter in enumerate(inference.adapters):
            source = adapter.source
            path = f"inference.adapters[{index}].source"
            if source is None or source.name is None:
                raise LocalRunError(f"{path}.name: required")
            if source.volume_source is None:
                raise LocalRunError(
                    f"{path}.image: image adapters are pulled on a cluster; pull it with "
                    "kaito_sdk.tools.oci.pull_adapter or pass --adapters-dir"
                )
            links[source.name] = _host_path(source.volume_source, f"{path}.volumeSource")
    launch = InferenceLaunch(
        runtime=runtime,
        model=_model_for(preset, options, "inference.preset.name"),
        served_model_name=preset.name,
        port=options.port,
        adapters_dir=str(adapters_dir or options.workdir / "adapters"),
        kaito_config_file=None if options.config is None else str(options.config),
    )
    argv = [*launch.to_argv(), "--host", options.host]
    return LocalPlan(
        kind="inference",
        steps=[argv],
        adapter_links=links,
        adapters_dir=Path(launch.adapters_dir),
        url=f"http://{options.host}:{options.port}/v1",
        health_url=f"http://{options.host}:{options.port}/health",
    )


def _plan_tuning(workspace: Workspace, options: LocalOptions) -> LocalPlan:
    tuning = workspace.tuning
    assert tuning is not None
    if tuning.preset is None:
        raise LocalRunError("tuning.preset: required")
    method = (tuning.method or "lora").lower()
    if method not in ("lora", "qlora"):
        raise LocalRunError("tuning.method: must be lora or qlora")
    preset = resolve_preset(tuning.preset.name)
    model = _model_for(preset, options, "tuning.preset.name")
    steps: list[list[str]] = []
    input_dir = options.input_dir
    source = tuning.input
    if input_dir is None:
        if source is not None and source.urls:
            input_dir = options.workdir / "data"
            steps.append(fetch_argv(source.urls, dest=str(input_dir)))
        elif source is not None and source.volume_source is not None:
            input_dir = _host_path(source.volume_source, "tuning.input.volumeSource")
        else:
            raise LocalRunError(
                "tuning.input.image: dataset images are pulled on a cluster; pass --input DIR"
            )
    output_dir = options.output_dir or options.workdir / "results"
    config = options.config or data_dir() / "tuning" / f"{method}-params.yaml"
    preset_or_model = {"model_dir": model} if options.model_dir else {"preset": preset.name}
    steps.append(
        run_argv(
            method=method,  # type: ignore[arg-type]  # checked above
            config_path=str(config),
            input_dir=str(input_dir),
            output_dir=str(output_dir),
            **preset_or_model,
        )
    )
    return LocalPlan(kind="tuning", steps=steps, output_dir=output_dir)


def plan_local_run(workspace: Workspace, options: LocalOptions) -> LocalPlan:
    """The processes that run ``workspace`` locally (pure: starts and writes nothing)."""
    if workspace.inference is not None:
        return _plan_inference(workspace, options)
    if workspace.tuning is not None:
        return _plan_tuning(workspace, options)
    raise LocalRunError("workspace: exactly one of inference or tuning is required")


def _link_adapters(plan: LocalPlan) -> None:
    if plan.adapters_dir is None:
        return
    plan.adapters_dir.mkdir(parents=True, exist_ok=True)  # the server scans it, even empty
    for name, target in plan.adapter_links.items():
        if not target.is_dir():
            raise LocalRunError(f"adapter {name!r}: {target} is not a directory")
        link = plan.adapters_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve(), target_is_directory=True)


def _executable(script: str) -> str:
    """The console script installed beside this Python (its venv), else on PATH."""
    beside = Path(sys.executable).with_name(script)
    found = str(beside) if beside.is_file() else shutil.which(script)
    if found is None:
        raise LocalRunError(f"{script} is not installed: pip install {script}")
    return found


TAIL_LINES = 30
HEALTH_POLL_S = 0.5
#: How often the main thread wakes while a step runs, to run signal handlers.
SIGNAL_POLL_S = 0.2


def _announce_when_healthy(
    url: str, proc: subprocess.Popen[bytes], on_ready: Callable[[float], None]
) -> None:
    """Poll ``url`` while ``proc`` runs; call ``on_ready(seconds)`` once it answers 200."""
    started = time.monotonic()
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    on_ready(time.monotonic() - started)
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(HEALTH_POLL_S)


#: How long a stopped step gets to end by itself before it is sent the signal we got, and
#: then before it is killed (an inference server drains its requests first).
CHILD_GRACE_S = 2.0
CHILD_STOP_S = 30.0


class _Terminated(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM reached ``kaito up``: stop the running step as Ctrl-C does."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_stops_the_step() -> Iterator[None]:
    """While a step runs, SIGTERM raises :class:`_Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_child(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Stop ``proc`` after we were asked to stop with ``signum``.

    Ctrl-C in a terminal reaches the whole foreground process group, the child included,
    so it gets a moment to end by itself; a signal sent to ``kaito up`` alone (a
    supervisor, ``kill``) is passed on to it; a child that does not end is killed. Either
    way nothing keeps running after ``kaito up`` has returned.
    """
    for action, wait_s in ((None, CHILD_GRACE_S), (signum, CHILD_STOP_S), (signal.SIGKILL, None)):
        if action is not None:
            proc.send_signal(action)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
            proc.kill()
            proc.wait()
            return


def _copy_output(stream: IO[bytes], tail: collections.deque[str]) -> None:
    """Copy ``stream`` to our stdout line by line, keeping the last lines in ``tail``."""
    out = sys.stdout.buffer
    for line in stream:
        out.write(line)
        out.flush()
        tail.append(line.decode(errors="replace").rstrip("\n"))


def _run_step(
    argv: list[str],
    *,
    health_url: str | None = None,
    on_ready: Callable[[float], None] | None = None,
) -> StepOutcome:
    """Run ``argv``, copying its output to ours line by line and keeping the last lines.

    The copy runs in a thread while the main thread waits in short joins: the kernel may
    hand a stop signal to any thread of the process, and Python runs its handler only in
    the main thread between bytecodes, so a blocking read of a silent server there left
    ``kaito up`` deaf to Ctrl-C or SIGTERM until the server printed again.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(  # noqa: S603 - argv built from the launch contracts
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    if health_url is not None and on_ready is not None:
        watcher = threading.Thread(
            target=_announce_when_healthy, args=(health_url, proc, on_ready), daemon=True
        )
        watcher.start()
    copier = threading.Thread(target=_copy_output, args=(proc.stdout, tail), daemon=True)
    copier.start()
    try:
        with _sigterm_stops_the_step():
            while copier.is_alive():
                copier.join(timeout=SIGNAL_POLL_S)
            code = proc.wait()
    except KeyboardInterrupt:
        _stop_child(proc, signal.SIGINT)
        code = 130
    except _Terminated:
        _stop_child(proc, signal.SIGTERM)
        code = 143
    copier.join(timeout=SIGNAL_POLL_S)  # the child's last lines, once it has ended
    return StepOutcome(argv=argv, code=code, tail=list(tail))


def run_plan(plan: LocalPlan, on_ready: Callable[[float], None] | None = None) -> StepOutcome:
    """Run every step in the foreground; return how the last step run ended.

    Preparation steps stop the plan at the first non-zero exit; the workload runs until it
    exits or Ctrl-C. ``on_ready(seconds)`` is called once the inference server's
    ``/health`` answers 200.
    """
    steps = [[_executable(argv[0]), *argv[1:]] for argv in plan.steps]
    _link_adapters(plan)
    *preparation, workload = steps
    for argv in preparation:
        outcome = _run_step(argv)
        if outcome.code != 0:
            return outcome
    return _run_step(workload, health_url=plan.health_url, on_ready=on_ready)


def default_workdir(name: str) -> Path:
    """The default local working directory of ``kaito up`` for the Workspace ``name``."""
    return Path(tempfile.gettempdir()) / f"kaito-up-{name}"
