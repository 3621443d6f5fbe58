"""The README's promises: its two commands, its SDK example, its preset table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kaito_sdk.presets import list_presets

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_demo_and_test_commands_and_ci_runs_both() -> None:
    first = code_blocks("bash")[0].splitlines()
    demo_command = first[0].split("#")[0].strip()
    assert demo_command.endswith("python3 -m nox -s demo")
    test_command = first[1].split("#")[0].strip()
    assert test_command.endswith("python3 -m nox")
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert demo_command in ci_lines  # the main job exactly as written, on its own line
    assert any(line.startswith(test_command) for line in ci_lines)


def test_sdk_example_runs() -> None:
    (example,) = code_blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "inference.preset.name" in lines[0]
    nodes, tensor_parallel, pipeline_parallel = map(int, lines[1].split())
    assert nodes >= 1
    assert tensor_parallel * pipeline_parallel >= 2  # 70B does not fit one A100
    assert lines[2] == "Standard_NC24ads_A100_v4"


def test_preset_table_lists_every_catalog_model() -> None:
    table = README.split("## Presets", 1)[1].split("## Metrics", 1)[0]
    listed = set(re.findall(r"`([a-z0-9.-]+)`", table))
    catalog = {preset.name for preset in list_presets()}
    assert catalog <= listed, sorted(catalog - listed)
    assert f"({len(catalog)} models" in table
