"""Training on the tiny random model: layouts, outputs, errors, metrics, restart/resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from kaito_sdk.contracts.tuning import COMPLETION_MARKER
from kaito_sdk.tuning_config import parse_training_config
from kaito_tuning.__main__ import main
from kaito_tuning.metrics import TrainingMetrics
from kaito_tuning.trainer import TrainJob, TuningError, last_complete_checkpoint, run_training

from .conftest import CHAT_ROWS, free_port

TEMPLATES = Path(__file__).resolve().parents[3] / "presets" / "tuning"

FAST = """
training_config:
  LoraConfig: {{r: 4, lora_alpha: 8{lora}}}
  TrainingArguments:
    max_steps: {steps}
    per_device_train_batch_size: 2
    learning_rate: 0.01
    save_strategy: "no"{training}
  DatasetConfig: {{train_test_split: 1{dataset}}}
  DataCollator: {{mlm: true{collator}}}
"""


def _config(
    steps: int = 4, *, lora: str = "", training: str = "", dataset: str = "", collator: str = ""
) -> str:
    return FAST.format(
        steps=steps, lora=lora, training=training, dataset=dataset, collator=collator
    )


def _job(model: Path, data: Path, out: Path, text: str) -> TrainJob:
    config = parse_training_config(text, method="lora")
    return TrainJob(config=config, method="lora", model=str(model), input_dir=data, output_dir=out)


def _write_layout(data: Path, layout: str) -> None:
    data.mkdir(exist_ok=True)
    rows: list[dict[str, object]]
    if layout == "messages":
        rows = list(CHAT_ROWS)
    elif layout == "prompt_completion":
        rows = [{"prompt": f"{i} plus {i} is", "completion": f" {2 * i}."} for i in range(8)]
    else:
        rows = [{"text": f"the model runs {i} requests fast"} for i in range(8)]
    (data / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("layout", ["messages", "prompt_completion", "text"])
def test_lora_trains_and_saves_only_the_adapter(
    tiny_model: Path, tmp_path: Path, layout: str
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    _write_layout(data, layout)
    metrics = TrainingMetrics()
    result = run_training(_job(tiny_model, data, out, _config(6)), metrics=metrics)
    assert result.steps == 6
    names = {path.name for path in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", COMPLETION_MARKER} <= names
    assert not any(name.startswith("checkpoint-") for name in names)
    assert not (out / "model.safetensors").exists()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["r"], adapter["lora_alpha"]) == ("LORA", 4, 8)
    losses = [entry["loss"] for entry in result.history]
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    assert all(entry["tokens_per_second"] > 0 for entry in result.history)
    assert metrics.step._value.get() == 6
    assert metrics.completed._value.get() == 1


def test_finished_job_is_not_run_again(tiny_model: Path, chat_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_training(_job(tiny_model, chat_data, out, _config(2)))
    before = (out / "adapter_model.safetensors").read_bytes()
    again = run_training(_job(tiny_model, chat_data, out, _config(4)))
    assert again.already_complete
    assert (out / "adapter_model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _config(lora=", use_magic: true"),
            "LoraConfig.use_magic: not an argument of peft.tuners.lora.config.LoraConfig",
        ),
        (
            _config(training="\n    warp_speed: 9"),
            "TrainingArguments.warp_speed: not an argument of trl.trainer.sft_config.SFTConfig",
        ),
        (
            _config(collator=", return_tensors: np"),
            "DataCollator.return_tensors: not supported "
            "(supported: mlm, mlm_probability, pad_to_multiple_of)",
        ),
    ],
)
def test_unknown_library_arguments_name_the_key(
    tiny_model: Path, chat_data: Path, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(TuningError) as caught:
        run_training(_job(tiny_model, chat_data, tmp_path / "out", text))
    assert str(caught.value) == message


def test_missing_model_is_a_clear_error(chat_data: Path, tmp_path: Path) -> None:
    with pytest.raises(TuningError, match=r"^ModelConfig: cannot load the base model from '"):
        run_training(_job(tmp_path / "no-model", chat_data, tmp_path / "out", _config()))


def test_qlora_without_cuda_stops_at_once(
    chat_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "training_config.yaml"
    config.write_text((TEMPLATES / "qlora-params.yaml").read_text())
    argv = ["run", "--method", "qlora", "--model", str(tmp_path / "never-loaded")]
    argv += ["--config", str(config), "--input", str(chat_data), "--output", str(tmp_path / "o")]
    assert main(argv) == 1
    assert (
        "method 'qlora' loads the base model in 4/8-bit with bitsandbytes, which needs a "
        "CUDA GPU, and none is visible; use method 'lora' on CPU" in caplog.text
    )
    assert not (tmp_path / "o").exists()


def test_cli_refuses_an_invalid_config(
    chat_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "training_config.yaml"
    config.write_text((TEMPLATES / "qlora-params.yaml").read_text())
    argv = ["run", "--method", "lora", "--model", str(tmp_path), "--config", str(config)]
    assert main([*argv, "--input", str(chat_data)]) == 2
    assert "training_config.QuantizationConfig: method 'lora' forbids load_in_4bit" in caplog.text
    assert main(["run", "--model", str(tmp_path), "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read the training config" in caplog.text


def test_cli_unknown_preset(
    chat_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "training_config.yaml"
    config.write_text(_config())
    argv = ["run", "--preset", "no-such-model", "--config", str(config), "--input", str(chat_data)]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 1
    assert "no-such-model" in caplog.text


def test_metrics_endpoint_serves_the_gauges() -> None:
    metrics = TrainingMetrics()
    metrics.step.set(7)
    metrics.tokens_per_second.set(123.5)
    with metrics.serve("127.0.0.1", 0) as port:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "kaito_tuning_step 7.0" in body
    assert "kaito_tuning_tokens_per_second 123.5" in body
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_killed_job_resumes_from_its_last_checkpoint(
    tiny_model: Path, chat_data: Path, tmp_path: Path
) -> None:
    """SIGKILL the real CLI mid-run, start it again: it resumes and finishes."""
    out = tmp_path / "out"
    config = tmp_path / "training_config.yaml"
    config.write_text(
        _config(24, training='\n    save_strategy: "steps"\n    save_steps: 4').replace(
            '    save_strategy: "no"\n', ""
        )
    )
    port = free_port()
    argv = [sys.executable, "-m", "kaito_tuning", "run", "--model", str(tiny_model)]
    argv += ["--config", str(config), "--input", str(chat_data), "--output", str(out)]
    argv += ["--metrics-port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KAITO_TUNING_METRICS_HOST": "127.0.0.1"}
    first = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    scraped = ""
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-8").is_dir():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint-8 within 120 s"
        if not scraped:
            with contextlib.suppress(httpx.TransportError):
                scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / COMPLETION_MARKER).exists()
    assert "kaito_tuning_max_steps" in scraped

    second = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"training: resuming from {out}/checkpoint-" in second.stderr
    assert "(resuming at step " in second.stderr
    assert "step 24/24 loss" in second.stderr
    assert "step 1/24 loss" not in second.stderr
    assert (out / COMPLETION_MARKER).is_file()
    assert not list(out.glob("checkpoint-*"))


def test_packing_trains_more_tokens_per_step(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_layout(data, "text")
    plain = run_training(_job(tiny_model, data, tmp_path / "plain", _config(2)))
    packed_config = _config(2, training="\n    packing: true\n    max_length: 128")
    packed = run_training(_job(tiny_model, data, tmp_path / "packed", packed_config))
    assert packed.steps == 2
    assert (tmp_path / "packed" / "adapter_model.safetensors").is_file()
    assert packed.history[0]["tokens"] > plain.history[0]["tokens"]


def test_cli_reports_bad_data_with_file_row_and_column(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    bad = data / "rows.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    config = tmp_path / "training_config.yaml"
    config.write_text(_config())
    argv = ["run", "--model", str(tiny_model), "--config", str(config), "--input", str(data)]
    assert main([*argv, "--output", str(tmp_path / "out"), "--metrics-port", "0"]) == 1
    assert f"{bad}, row 2, column 'text': missing (columns present: txt)" in caplog.text
    assert "Traceback" not in caplog.text


def test_partial_checkpoints_are_skipped_and_removed(tmp_path: Path) -> None:
    for step, state in [(2, "{}"), (4, '{"global_step": 4}'), (6, None), (8, '{"glob')]:
        checkpoint = tmp_path / f"checkpoint-{step}"
        checkpoint.mkdir()
        (checkpoint / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (checkpoint / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-latest").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == ["checkpoint-2", "checkpoint-4", "checkpoint-latest"]
    assert last_complete_checkpoint(tmp_path / "nothing") is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU (bitsandbytes)")
def test_qlora_on_gpu(tiny_model: Path, chat_data: Path, tmp_path: Path) -> None:
    """GPU counterpart of ``test_qlora_without_cuda_stops_at_once``: 4-bit base + LoRA."""
    text = (
        (TEMPLATES / "qlora-params.yaml")
        .read_text()
        .replace(
            "per_device_train_batch_size: 1", "per_device_train_batch_size: 2\n    max_steps: 2"
        )
    )
    config = parse_training_config(text, method="qlora")
    job = TrainJob(
        config=config, method="qlora", model=str(tiny_model), input_dir=chat_data,
        output_dir=tmp_path / "out",
    )  # fmt: skip
    result = run_training(job)
    assert result.steps == 2
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
