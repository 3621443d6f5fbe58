"""Prove that one package, installed alone without extras, starts its real startup path.

Run by ``nox -s install_check`` inside a fresh virtualenv that holds only the package (and
the SDK it depends on), never a test extra, so a runtime dependency that only a test extra
installs fails here instead of in a user's hands:

- ``sdk``: every ``kaito_sdk`` module imports (the tools without their extras); an example
  manifest loads, validates and is sized; typer, rich and torch are not installed.
- ``cli``: every ``kaito_cli`` module imports; ``kaito presets``, ``kaito validate``,
  ``kaito estimate`` and ``kaito up --dry-run`` (the plan, without the services) run.
- ``services/cpu-runtime``: every ``kaito_cpu_runtime`` module imports; the thread
  policy sets ``OMP_NUM_THREADS`` before torch starts; the lean Llama decoder and BERT
  encoder, built on tiny random models, give the transformers forward's results.
- ``services/operator``: every module imports; the kopf registry builds from the default
  settings (all the operator does before it contacts a cluster); ``kaito render`` prints
  an example's objects.
- ``services/inference``: ``kaito-inference serve`` converts the embedded SmolLM2 into an
  empty cache, answers ``/health`` and one chat completion, and stops on SIGINT.
- ``services/ragengine``: ``kaito-ragengine serve`` loads MiniLM, indexes a document,
  retrieves it, and stops on SIGINT.
- ``services/tuning``: ``kaito-tuning run`` converts the embedded SmolLM2 and trains a
  one-step LoRA adapter.

Only the standard library is used here: the check must not bring in what it checks for.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 600


def log(message: str) -> None:
    """One progress line, flushed at once (nox shows it as it comes)."""
    print(f"startup_check: {message}", flush=True)


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    """Run a console script of this venv; fail with its output when it fails."""
    command = [str(BIN / argv[0]), *argv[1:]]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    log(f"{' '.join(argv)}: ok")
    return done.stdout


def import_all(package: str) -> None:
    """Import every module of ``package`` (test support is not shipped: all must import)."""
    root = importlib.import_module(package)
    count = 1
    for module in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        importlib.import_module(module.name)
        count += 1
    log(f"imported {count} modules of {package}")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, body: dict[str, object] | None = None, timeout: float = 300) -> object:
    """GET (or POST ``body`` as JSON) and return the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    message = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(message, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{url} answered {error.code}: {error.read().decode()}") from None


def serve(
    argv: list[str], env: dict[str, str], port: int, workdir: Path
) -> subprocess.Popen[bytes]:
    """Start a server and wait for ``/health``; exit with its log if it dies or hangs."""
    log_path = workdir / f"{argv[0]}.log"
    with log_path.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603
            [str(BIN / argv[0]), *argv[1:]], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if proc.poll() is not None:
            sys.exit(f"{argv[0]} exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            health = f"http://127.0.0.1:{port}/health"
            with urllib.request.urlopen(health, timeout=2):
                pass
        except (urllib.error.URLError, OSError):  # not listening yet, or 503 while loading
            time.sleep(1)
            continue
        log(f"{argv[0]} is healthy after {time.monotonic() - started:.1f} s")
        return proc
    proc.kill()
    sys.exit(f"{argv[0]} not healthy in {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    """SIGINT, then expect a clean exit."""
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    if code != 0:
        sys.exit(f"{name} exited {code} on SIGINT")
    log(f"{name} stopped cleanly")


def check_sdk(_: Path, _env: dict[str, str]) -> None:
    """SDK: imports, then an example through validation and the estimator, on pydantic and
    PyYAML alone."""
    import_all("kaito_sdk")
    extra = [n for n in ("typer", "rich", "torch") if importlib.util.find_spec(n) is not None]
    if extra:
        sys.exit(f"the SDK alone installed {extra}: its core needs only pydantic and PyYAML")
    from kaito_sdk.api import load_yaml  # noqa: PLC0415
    from kaito_sdk.estimator import estimate_nodes  # noqa: PLC0415
    from kaito_sdk.validation import validate  # noqa: PLC0415

    example = ROOT / "examples" / "workspace-smollm2-cpu.yaml"
    (workspace,) = load_yaml(example.read_text(encoding="utf-8"))
    errors = validate(workspace)
    if errors:
        sys.exit(f"{example.name}: {errors}")
    estimate = estimate_nodes("llama-3.1-8b-instruct", "Standard_NC24ads_A100_v4")
    log(f"{example.name} is valid; llama-3.1-8b-instruct needs {estimate.node_count} node(s)")


def check_cli(_: Path, env: dict[str, str]) -> None:
    """CLI: catalog, validation, estimation and the ``kaito up`` plan from the console
    script, with neither the operator nor a service installed."""
    import_all("kaito_cli")
    run("kaito", "presets", env=env)
    run("kaito", "validate", str(ROOT / "examples" / "workspace-smollm2-cpu.yaml"), env=env)
    run("kaito", "estimate", "llama-3.1-8b-instruct", "--instance-type", "Standard_NC24ads_A100_v4")
    example = str(ROOT / "examples" / "workspace-smollm2-cpu.yaml")
    planned = run("kaito", "up", example, "--dry-run", env=env)
    if "$ kaito-inference serve " not in planned:
        sys.exit(f"kaito up --dry-run planned no kaito-inference serve:\n{planned}")


def check_operator(_: Path, env: dict[str, str]) -> None:
    """Operator: imports, the kopf registry from default settings, ``kaito render``."""
    import_all("kaito_operator")
    from kaito_operator.handlers import build_registry  # noqa: PLC0415
    from kaito_operator.settings import OperatorSettings  # noqa: PLC0415

    registry = build_registry(OperatorSettings())
    log(f"kopf registry built ({type(registry).__name__})")
    out = run("kaito", "render", str(ROOT / "examples" / "workspace-smollm2-cpu.yaml"), env=env)
    if "kind: StatefulSet" not in out:
        sys.exit(f"kaito render printed no StatefulSet:\n{out}")


def check_inference(workdir: Path, env: dict[str, str]) -> None:
    """Inference: the embedded model converts into an empty cache and answers a chat."""
    import_all("kaito_inference")
    port = free_port()
    proc = serve(["kaito-inference", "serve", "--port", str(port)], env, port, workdir)
    try:
        answer = request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {
                "model": "smollm2-135m-instruct",
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8,
            },
        )
        assert isinstance(answer, dict)
        log(f"chat completion: {answer['choices'][0]['message']['content']!r}")
    finally:
        stop(proc, "kaito-inference")


# Run in a child python: the thread policy must act before torch is first imported.
_CPU_RUNTIME_PROGRAM = """
import os
from kaito_cpu_runtime.threads import available_cpus, configure_cpu_threads
os.environ.pop("OMP_NUM_THREADS", None)
configure_cpu_threads()
assert os.environ["OMP_NUM_THREADS"] == str(available_cpus())
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertModel, LlamaConfig
from kaito_cpu_runtime.bert_encoder import BertEncoder
from kaito_cpu_runtime.kvcache import new_batch_cache
from kaito_cpu_runtime.llama_decoder import FastDecoder
torch.manual_seed(0)
config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
llama = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
decoder = FastDecoder.build(llama)
assert decoder is not None, "no fast decoder for a plain float32 Llama"
ids = torch.randint(3, 97, (2, 6))
mask = torch.ones_like(ids)
positions = torch.arange(6).expand(2, 6)
with torch.inference_mode():
    want = llama(input_ids=ids).logits[:, -1]
    got = decoder(ids, mask, positions, new_batch_cache(config))
torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
bert = BertModel(BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=64)).eval()
encoder = BertEncoder.build(bert, torch.float32)
assert encoder is not None, "no lean encoder for a plain BERT"
with torch.inference_mode():
    want = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    got = encoder(ids, mask, torch.zeros_like(ids))
torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
print(os.environ["OMP_NUM_THREADS"], torch.get_num_threads())
"""


def check_cpu_runtime(_: Path, env: dict[str, str]) -> None:
    """CPU runtime: every module imports; the decoder and the encoder match transformers."""
    import_all("kaito_cpu_runtime")
    command = [sys.executable, "-c", _CPU_RUNTIME_PROGRAM]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.exit(f"the CPU runtime check failed:\n{done.stdout}\n{done.stderr}")
    omp, threads = done.stdout.split()
    log(
        f"fast decoder and BERT encoder match transformers (OMP_NUM_THREADS={omp}, "
        f"torch threads {threads})"
    )


def check_ragengine(workdir: Path, env: dict[str, str]) -> None:
    """RAG engine: MiniLM loads; one document is indexed and retrieved."""
    import_all("kaito_ragengine")
    port = free_port()
    argv = ["kaito-ragengine", "serve", "--port", str(port), "--persist-dir", str(workdir / "p")]
    proc = serve(argv, env, port, workdir)
    try:
        base = f"http://127.0.0.1:{port}"
        document = {"text": "FAISS keeps the vectors of every chunk.", "metadata": {"n": 1}}
        request(f"{base}/index", {"index_name": "check", "documents": [document]})
        found = request(f"{base}/retrieve", {"index_name": "check", "query": "vectors"})
        assert isinstance(found, dict)
        if not found.get("results"):
            sys.exit(f"retrieve found nothing: {found}")
        log(f"retrieved {len(found['results'])} chunk(s)")
    finally:
        stop(proc, "kaito-ragengine")


def check_tuning(workdir: Path, env: dict[str, str]) -> None:
    """Tuning: a one-step LoRA run on the embedded SmolLM2 writes an adapter."""
    import_all("kaito_tuning")
    data = workdir / "data"
    data.mkdir()
    rows = [
        {"prompt": f"Count to {n}.", "completion": " ".join(map(str, range(n)))}
        for n in range(2, 8)
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = workdir / "training_config.yaml"
    config.write_text(
        "training_config:\n"
        "  LoraConfig: {r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}\n"
        "  TrainingArguments: {max_steps: 1, per_device_train_batch_size: 2, max_length: 32}\n"
        "  DatasetConfig: {train_test_split: 1}\n"
    )
    output = workdir / "adapter"
    tuning_env = {**env, "KAITO_TUNING_METRICS_PORT": "0"}
    run(
        "kaito-tuning", "run", "--preset", "smollm2-135m-instruct", "--config", str(config),
        "--input", str(data), "--output", str(output), env=tuning_env,
    )  # fmt: skip
    if not (output / "adapter_config.json").is_file():
        sys.exit(f"no adapter in {output}")


CHECKS = {
    "sdk": check_sdk,
    "services/cpu-runtime": check_cpu_runtime,
    "cli": check_cli,
    "services/operator": check_operator,
    "services/inference": check_inference,
    "services/ragengine": check_ragengine,
    "services/tuning": check_tuning,
}


def main() -> None:
    """Run the check of one package in a fresh working directory and an empty model cache."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", choices=sorted(CHECKS))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kaito-startup-check-"))
    env = {
        **os.environ,
        "KAITO_CACHE_DIR": str(workdir / "cache"),  # empty: the conversion runs
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    started = time.monotonic()
    try:
        CHECKS[args.package](workdir, env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"{args.package}: startup path ok in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
