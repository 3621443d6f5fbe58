"""Units: the Markdown heading chunker and word-piece sizing."""

from __future__ import annotations

import re

from kaito_ragengine.stores.chunking import (
    Chunker,
    is_markdown,
    markdown_sections,
    wordpiece_counter,
)

GUIDE = """Intro text before any heading.

# Install

Read this first.

## Requirements

- Kubernetes 1.28 or newer
- Helm 3.8 or newer

```bash
# not a heading: a shell comment inside a fence
helm install demo charts/demo
```

## Values ##

### kaito-workspace

| value | default |
|---|---|
| `webhook.port` | `9443` |

# Upgrade

Run helm upgrade.
"""


def test_sections_carry_their_heading_path() -> None:
    sections = markdown_sections(GUIDE)
    assert [s.path for s in sections] == [
        (),
        ("Install",),
        ("Install", "Requirements"),
        ("Install", "Values", "kaito-workspace"),
        ("Upgrade",),
    ]
    requirements = sections[2].body
    assert "# not a heading: a shell comment inside a fence" in requirements
    assert requirements.rstrip().endswith("```")
    assert sections[0].body == "Intro text before any heading."


def test_markdown_is_detected_from_headings_or_metadata() -> None:
    assert is_markdown(GUIDE, {})
    assert not is_markdown("```\n# only a comment in a fence\n```\nplain", {})
    assert not is_markdown("#hashtag is not a heading", {})
    assert is_markdown("no headings at all", {"split_type": "markdown"})


def test_markdown_chunks_start_with_the_path_and_keep_every_body_line() -> None:
    chunks = Chunker(250, 32).split(GUIDE, {"source": "docs/install.md"})
    assert chunks[0] == "Intro text before any heading."
    assert chunks[1] == "Install\n\nRead this first."
    assert chunks[2].startswith("Install > Requirements\n\n- Kubernetes 1.28 or newer")
    assert chunks[3].startswith("Install > Values > kaito-workspace\n\n| value | default |")
    assert chunks[4] == "Upgrade\n\nRun helm upgrade."
    body_lines = {
        line for s in markdown_sections(GUIDE) for line in s.body.splitlines() if line.strip()
    }
    chunk_lines = {line for c in chunks for line in c.splitlines()}
    assert body_lines <= chunk_lines


def test_a_demo_section_document_gets_its_heading_as_path() -> None:
    text = "## Quick start on a cluster\n\nThe operator sizes the node count from the SKU."
    assert Chunker(250, 32).split(text, {}) == [
        "Quick start on a cluster\n\nThe operator sizes the node count from the SKU."
    ]


def test_long_sections_are_packed_by_blocks_within_the_word_piece_budget() -> None:
    count = wordpiece_counter()
    rows = "\n".join(f"| `setting_{i}` | default {i} | what setting {i} does |" for i in range(80))
    paragraph = " ".join(
        f"Sentence {i} explains one more detail of the operator." for i in range(60)
    )
    table = f"| name | default | meaning |\n|---|---|---|\n{rows}"
    text = f"# Reference\n\n## Settings\n\n{table}\n\n{paragraph}\n"
    chunker = Chunker(96, 16)
    chunks = chunker.split(text, {})
    assert len(chunks) > 8
    for chunk in chunks:
        assert chunk.startswith("Reference > Settings\n\n")
        assert count(chunk) <= 96
    table_lines = [line for c in chunks for line in c.splitlines() if line.startswith("| `")]
    assert table_lines == [line for line in rows.splitlines()]  # rows whole, in order, once
    sentences = re.findall(r"Sentence (\d+) ", " ".join(chunks))
    assert sorted(set(map(int, sentences))) == list(range(60))  # the paragraph cut by sentences


def test_sizes_are_word_pieces_so_chunks_fit_minilm() -> None:
    count = wordpiece_counter()
    assert count("hello world") == 2
    assert count("tokenization") > 1  # word pieces, not words
    text = " ".join(f"The kaito_operator reconciles Workspace-{i} quickly." for i in range(400))
    chunks = Chunker(250, 32).split(text, {})
    assert len(chunks) > 3
    assert all(count(c) + 2 <= 256 for c in chunks)  # + [CLS] and [SEP]
