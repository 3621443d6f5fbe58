"""RAG engine retrieval benchmark: ``POST /retrieve`` latency at several concurrencies.

Starts ``kaito-ragengine serve`` (local MiniLM) over a persistence directory; if that
directory has no ``bench`` index of at least ``--docs`` documents, indexes the synthetic
documents of ``rag_ingest.py`` first (and keeps the snapshot for the next run). Then
sends ``--queries`` hybrid queries (top 5) per concurrency level from that many client
tasks and prints p50/p99 latency, queries/s and the server's RSS.

    HF_HUB_OFFLINE=1 python bench/rag_retrieve.py --docs 10000 --persist-dir /tmp/rag-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rag_ingest import make_documents, make_queries, rag_server, rss_mib, server_rate


async def measure(url: str, queries: list[str], concurrency: int) -> dict[str, Any]:
    """Latencies of ``queries`` sent by ``concurrency`` tasks, each one request at a time."""
    latencies: list[float] = []
    pending = list(queries)
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
                assert response.json()["count"] == 5

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency,
        "queries": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000, 1),
        "queries_per_s": round(len(latencies) / elapsed, 1),
    }


def main() -> None:
    """Run the benchmark and print one JSON line per concurrency level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=400, help="queries per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--persist-dir", type=Path, default=Path("/tmp/kaito-rag-bench"))
    args = parser.parse_args()
    args.persist_dir.mkdir(parents=True, exist_ok=True)
    with rag_server(args.persist_dir, snapshot_on_shutdown=True) as (url, pid):
        listing = httpx.get(f"{url}/indexes/bench/documents", params={"limit": 1}, timeout=60)
        have = listing.json()["total_items"] if listing.status_code == 200 else 0
        if have < args.docs:
            print(f"indexing {args.docs} documents first ...", file=sys.stderr)
            server_rate(url, "bench", make_documents(args.docs), 500)
        queries = make_queries(args.queries + 20)
        asyncio.run(measure(url, queries[:20], 1))  # warm-up
        for concurrency in args.concurrency:
            result = asyncio.run(measure(url, queries[20:], concurrency))
            result.update(
                documents=max(have, args.docs),
                server_rss_mib=round(rss_mib(pid), 1),
                load_average=os.getloadavg()[0],
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
