"""Real LoRA on SmolLM2-135M-Instruct on CPU: loss goes down, adapter reloads and matters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from kaito_sdk.tuning_config import parse_training_config
from kaito_tuning.__main__ import _model_for_preset
from kaito_tuning.trainer import TrainJob, run_training

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the secret word?",
    "Tell me the secret word.",
    "Which word is the secret one?",
    "Do you know the secret word?",
]
ANSWER = "The secret word is pineapple."
CONFIG = """
training_config:
  ModelConfig: {torch_dtype: bfloat16}
  LoraConfig: {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}
  TrainingArguments:
    max_steps: 6
    per_device_train_batch_size: 4
    learning_rate: 0.003
    max_length: 64
  DatasetConfig: {shuffle_seed: 1, train_test_split: 1}
"""


def test_lora_on_smollm2(tmp_path: Path) -> None:
    model_dir = Path(_model_for_preset("smollm2-135m-instruct"))
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
        for q in QUESTIONS * 4
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    config = parse_training_config(CONFIG, method="lora")
    job = TrainJob(
        config=config, method="lora", model=str(model_dir), input_dir=data, output_dir=out
    )
    result = run_training(job)

    losses = [entry["loss"] for entry in result.history]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    assert (out / "adapter_model.safetensors").stat().st_size < 5_000_000

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    conversation = [{"role": "user", "content": QUESTIONS[0]}]
    prompt_ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
    if not isinstance(prompt_ids, list):  # transformers 5 returns a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    answer_ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([prompt_ids + answer_ids])
    labels = input_ids.clone()
    labels[0, : len(prompt_ids)] = -100  # score the answer only

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_out = base(input_ids=input_ids, labels=labels)
    tuned = PeftModel.from_pretrained(base, out)
    with torch.no_grad():
        tuned_out = tuned(input_ids=input_ids, labels=labels)
    assert (tuned_out.logits - base_out.logits).abs().max().item() > 0.1
    # the reloaded adapter makes the trained answer clearly more likely
    assert tuned_out.loss.item() < 0.8 * base_out.loss.item(), (
        base_out.loss.item(),
        tuned_out.loss.item(),
    )
