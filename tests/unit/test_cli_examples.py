"""The example tables shipped for local mode: reproducible from their generator and varied."""

from __future__ import annotations

import csv
import gzip
from collections import Counter

from snowtrain.cli.emulator import EXAMPLE_TABLES, EXAMPLES_DIR
from snowtrain.cli.examples import generate


def _rows(path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    generate.main(tmp_path)
    for filename in EXAMPLE_TABLES.values():
        assert (tmp_path / filename).read_bytes() == (EXAMPLES_DIR / filename).read_bytes(), (
            f"{filename} is stale: run python -m snowtrain.cli.examples.generate"
        )


def test_sentiment_table_is_varied_and_labelled():
    rows = _rows(EXAMPLES_DIR / EXAMPLE_TABLES["SENTIMENT"])
    assert list(rows[0]) == ["ID", "TEXT", "LABEL"]
    assert len(rows) >= 2000
    labels = Counter(r["LABEL"] for r in rows)
    assert set(labels) == {"positive", "negative", "neutral"}
    assert min(labels.values()) > len(rows) * 0.15
    assert len({r["TEXT"] for r in rows}) > 0.9 * len(rows)


def test_prompt_completion_and_corpus_tables():
    pairs = _rows(EXAMPLES_DIR / EXAMPLE_TABLES["PROMPT_COMPLETION"])
    assert list(pairs[0]) == ["ID", "PROMPT", "COMPLETION"] and len(pairs) >= 1000
    assert all(p["PROMPT"].endswith("Summary:") and p["COMPLETION"].strip() for p in pairs)
    corpus = _rows(EXAMPLES_DIR / EXAMPLE_TABLES["CORPUS"])
    assert list(corpus[0]) == ["ID", "TEXT"] and len(corpus) >= 2000
    assert len({r["TEXT"] for r in corpus}) > 0.9 * len(corpus)
