"""kaito up: the local plan built from a Workspace (pure; the real runs are in tests/)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kaito_cli.cli import build_app
from kaito_cli.local_up import LocalOptions, LocalRunError, _run_step, plan_local_run
from kaito_sdk.api import Workspace
from kaito_sdk.presets.catalog import data_dir

SELECTOR = {"labelSelector": {"matchLabels": {"apps": "local"}}}


def workspace(body: dict[str, Any], annotations: dict[str, str] | None = None) -> Workspace:
    metadata: dict[str, Any] = {"name": "local-ws"}
    if annotations:
        metadata["annotations"] = annotations
    return Workspace.from_manifest(
        {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": metadata}
        | {"resource": SELECTOR}
        | body
    )


def test_cpu_preset_serves_the_embedded_default(tmp_path: Path) -> None:
    ws = workspace({"inference": {"preset": {"name": "smollm2-135m-instruct"}}})
    plan = plan_local_run(ws, LocalOptions(workdir=tmp_path, port=8123))
    (argv,) = plan.steps
    assert argv[:2] == ["kaito-inference", "serve"]
    assert argv[argv.index("--model") + 1] == "smollm2-135m-instruct"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--adapters-dir") + 1] == str(tmp_path / "adapters")
    assert plan.url == "http://127.0.0.1:8123/v1"


def test_runtime_annotation_and_config_reach_the_server(tmp_path: Path) -> None:
    ws = workspace(
        {"inference": {"preset": {"name": "smollm2-135m-instruct"}}},
        annotations={"kaito.sh/runtime": "vllm"},
    )
    config = tmp_path / "inference_config.yaml"
    (argv,) = plan_local_run(ws, LocalOptions(workdir=tmp_path, config=config)).steps
    assert argv[argv.index("--runtime") + 1] == "vllm"
    assert argv[argv.index("--kaito-config-file") + 1] == str(config)


def test_gpu_preset_needs_a_model_dir(tmp_path: Path) -> None:
    ws = workspace({"inference": {"preset": {"name": "phi-4-mini-instruct"}}})
    with pytest.raises(LocalRunError, match=r"inference\.preset\.name: .*needs a GPU"):
        plan_local_run(ws, LocalOptions(workdir=tmp_path))
    (argv,) = plan_local_run(ws, LocalOptions(workdir=tmp_path, model_dir=tmp_path)).steps
    assert argv[argv.index("--model") + 1] == str(tmp_path)
    assert argv[argv.index("--served-model-name") + 1] == "phi-4-mini-instruct"


def test_hostpath_adapters_are_linked_and_image_adapters_refused(tmp_path: Path) -> None:
    adapter = {"source": {"name": "legal", "volumeSource": {"hostPath": {"path": "/data/legal"}}}}
    ws = workspace(
        {"inference": {"preset": {"name": "smollm2-135m-instruct"}, "adapters": [adapter]}}
    )
    plan = plan_local_run(ws, LocalOptions(workdir=tmp_path))
    assert plan.adapter_links == {"legal": Path("/data/legal")}
    image = {"source": {"name": "img", "image": "example.com/adapters/img:1"}}
    ws = workspace(
        {"inference": {"preset": {"name": "smollm2-135m-instruct"}, "adapters": [image]}}
    )
    with pytest.raises(LocalRunError, match=r"inference\.adapters\[0\]\.source\.image"):
        plan_local_run(ws, LocalOptions(workdir=tmp_path))


def test_template_workspaces_only_run_on_a_cluster(tmp_path: Path) -> None:
    ws = workspace({"inference": {"template": {"spec": {"containers": []}}}})
    with pytest.raises(LocalRunError, match=r"inference\.template"):
        plan_local_run(ws, LocalOptions(workdir=tmp_path))


def test_tuning_with_urls_fetches_then_trains_with_the_default_template(tmp_path: Path) -> None:
    ws = workspace(
        {
            "tuning": {
                "preset": {"name": "smollm2-135m-instruct"},
                "method": "LoRA",
                "input": {"urls": ["https://example.com/data.jsonl"]},
                "output": {"volumeSource": {"emptyDir": {}}},
            }
        }
    )
    fetch, run = plan_local_run(ws, LocalOptions(workdir=tmp_path)).steps
    assert fetch == [
        "kaito-tuning", "fetch", "--url", "https://example.com/data.jsonl",
        "--dest", str(tmp_path / "data"),
    ]  # fmt: skip
    assert run[:4] == ["kaito-tuning", "run", "--method", "lora"]
    assert run[run.index("--config") + 1] == str(data_dir() / "tuning" / "lora-params.yaml")
    assert Path(run[run.index("--config") + 1]).is_file()
    assert run[run.index("--input") + 1] == str(tmp_path / "data")
    assert run[run.index("--output") + 1] == str(tmp_path / "results")


def test_tuning_image_input_needs_a_local_input(tmp_path: Path) -> None:
    ws = workspace(
        {
            "tuning": {
                "preset": {"name": "smollm2-135m-instruct"},
                "method": "lora",
                "input": {"image": "example.com/data/set:1"},
                "output": {"volumeSource": {"emptyDir": {}}},
            }
        }
    )
    with pytest.raises(LocalRunError, match=r"tuning\.input\.image: .*--input"):
        plan_local_run(ws, LocalOptions(workdir=tmp_path))
    (run,) = plan_local_run(ws, LocalOptions(workdir=tmp_path, input_dir=tmp_path)).steps
    assert run[run.index("--input") + 1] == str(tmp_path)


def test_cli_dry_run_prints_commands_and_rejects_invalid_files(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    runner = CliRunner()
    result = runner.invoke(
        build_app(plugins=False),
        ["up", str(examples / "workspace-smollm2-cpu.yaml"), "--dry-run", "--port", "8001"],
    )
    assert result.exit_code == 0, result.output
    assert "$ kaito-inference serve --runtime" in result.output
    assert "--port 8001" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: x}\n")
    result = runner.invoke(build_app(plugins=False), ["up", str(bad), "--dry-run"])
    assert result.exit_code == 1
    assert "error:" in result.output


@pytest.mark.usefixtures("sigint_raises")
def test_a_stop_signal_another_thread_takes_still_stops_the_step() -> None:
    """The kernel hands a signal sent to the process to any thread; one taken by another
    thread while the server is silent still stops the step at once (the main thread used
    to block reading the server's output and answered only once the server printed)."""
    child = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(20)"]

    def interrupt_from_another_thread() -> None:
        time.sleep(1.0)  # the step is running and its server has gone quiet
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    helper = threading.Thread(target=interrupt_from_another_thread)
    helper.start()
    started = time.monotonic()
    outcome = _run_step(child)
    helper.join()
    assert outcome.code == 130
    assert time.monotonic() - started < 10
    assert outcome.tail[0] == "up"  # the output was copied
