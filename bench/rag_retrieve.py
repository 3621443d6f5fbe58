"""RAG engine retrieval benchmark: ``POST /retrieve`` latency at several concurrencies.

Starts ``kaito-ragengine serve`` (local MiniLM) over a persistence directory; if that
directory has no ``bench`` index of at least ``--docs`` documents, indexes the synthetic
documents of ``rag_ingest.py`` first (and keeps the snapshot for the next run). Then
sends ``--queries`` hybrid queries (top 5) per concurrency level from that many client
tasks over one ``httpx.AsyncClient``. Every query of the run is distinct (no level sees
a query another level or the warm-up saw), so nothing can be answered from a cache.

One JSON line per level: p50/p90/p99 latency, queries/s, CPU milliseconds per query of
the server (its event-loop thread, which parses HTTP, searches FAISS and BM25 and writes
JSON, and its other threads, which embed) and of this client, the server's RSS, and the
machine's load averages (``/proc/loadavg``) before and after the level.

    HF_HUB_OFFLINE=1 python bench/rag_retrieve.py --docs 10000 --persist-dir /tmp/rag-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from machine import describe_machine
from rag_ingest import (
    load_average,
    make_documents,
    make_queries,
    rag_server,
    rss_mib,
    server_rate,
)

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid``'s main thread and of all its other threads together."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


def client_cpu_s() -> float:
    """CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, queries: list[str], concurrency: int) -> dict[str, Any]:
    """Latencies of ``queries`` sent by ``concurrency`` tasks, each one request at a time."""
    latencies: list[float] = []
    pending = list(reversed(queries))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while pending:
                query = pending.pop()
                body = {"index_name": "bench", "query": query, "max_node_count": 5}
                started = time.perf_counter()
                response = await client.post("/retrieve", json=body)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                if response.json()["count"] != 5:
                    raise RuntimeError(f"expected 5 results for {query!r}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "concurrency": concurrency,
        "queries": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "max_ms": round(latencies[-1] * 1000, 1),
        "queries_per_s": round(len(latencies) / elapsed, 1),
    }


def main() -> None:
    """Run the benchmark and print one JSON line per concurrency level."""
    print(describe_machine(), file=sys.stderr, flush=True)  # stdout: JSON results
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=400, help="queries per concurrency level")
    parser.add_argument("--warmup", type=int, default=40, help="queries before the first level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--persist-dir", type=Path, default=Path("/tmp/kaito-rag-bench"))
    args = parser.parse_args()
    args.persist_dir.mkdir(parents=True, exist_ok=True)
    print(f"load before start: {load_average()}", file=sys.stderr)
    with rag_server(args.persist_dir, snapshot_on_shutdown=True) as (url, pid):
        listing = httpx.get(f"{url}/indexes/bench/documents", params={"limit": 1}, timeout=60)
        have = listing.json()["total_items"] if listing.status_code == 200 else 0
        if have < args.docs:
            print(f"indexing {args.docs} documents first ...", file=sys.stderr)
            server_rate(url, "bench", make_documents(args.docs), 500)
        queries = make_queries(args.warmup + args.queries * len(args.concurrency))
        if len(set(queries)) != len(queries):
            raise RuntimeError("the generated queries are not distinct")
        asyncio.run(measure(url, queries[: args.warmup], 1))
        for level, concurrency in enumerate(args.concurrency):
            start = args.warmup + level * args.queries
            load_before = load_average()
            server_before, client_before = thread_cpu_s(pid), client_cpu_s()
            result = asyncio.run(measure(url, queries[start : start + args.queries], concurrency))
            server_after, client_after = thread_cpu_s(pid), client_cpu_s()
            per_query = 1000 / args.queries
            result.update(
                documents=max(have, args.docs),
                server_cpu_ms_per_query={
                    "event_loop": round((server_after[0] - server_before[0]) * per_query, 2),
                    "other_threads": round((server_after[1] - server_before[1]) * per_query, 2),
                },
                client_cpu_ms_per_query=round((client_after - client_before) * per_query, 2),
                server_rss_mib=round(rss_mib(pid), 1),
                load_before=load_before,
                load_after=load_average(),
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
