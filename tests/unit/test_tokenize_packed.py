"""Packed pretraining stores: EOS between documents, fixed-length blocks, tail handling."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from snowtrain.trainer.data.tokenize import build_packed
from snowtrain.trainer.errors import InvalidConfig


class TableSource:
    def __init__(self, table: pa.Table, batch_rows: int = 2) -> None:
        self.table, self.batch_rows = table, batch_rows

    def iter_batches(self, split: str = "train"):
        yield from self.table.to_batches(max_chunksize=self.batch_rows)


DOCS = [
    "once upon a time there was a small model",
    "the movie was great",
    "it was fine, nothing special",
    "the service was terrible and the food was cold",
    "question: what is two plus two? answer: four",
]


def stream(tok) -> list[int]:
    out: list[int] = []
    for doc in DOCS:
        out += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return out


def test_blocks_are_the_eos_joined_stream(bpe_tokenizer, tmp_path):
    ds = build_packed(TableSource(pa.table({"text": DOCS})), "train", bpe_tokenizer, 8, tmp_path)
    expected = stream(bpe_tokenizer)
    assert ds.num_tokens == len(expected)
    blocks = [ds[i]["input_ids"].tolist() for i in range(len(ds))]
    assert all(len(b) == 8 for b in blocks[:-1])
    joined = list(itertools.chain.from_iterable(blocks))
    assert joined == expected[: len(joined)]
    assert len(joined) >= len(expected) - 1  # only a 1-token tail may be dropped
    assert ds[0]["labels"].tolist() == blocks[0]  # the model shifts labels itself
    assert expected.count(bpe_tokenizer.eos_token_id) == len(DOCS)


def test_short_tail_becomes_a_padded_last_block(bpe_tokenizer, tmp_path):
    ds = build_packed(
        TableSource(pa.table({"text": DOCS[:1]})), "validation", bpe_tokenizer, 512, tmp_path
    )
    assert len(ds) == 1  # one short document still yields a block to evaluate
    batch = ds.collate([ds[0]])
    assert batch["input_ids"].shape[1] == ds.num_tokens


def test_full_blocks_batch_without_a_mask_and_a_padded_tail_keeps_one(bpe_tokenizer, tmp_path):
    """No padding, no mask: SDPA can then run causal attention with ``is_causal=True``."""
    ds = build_packed(TableSource(pa.table({"text": DOCS})), "train", bpe_tokenizer, 8, tmp_path)
    full = ds.collate([ds[0], ds[1]])
    assert set(full) == {"input_ids", "labels"}
    assert full["input_ids"].shape == (2, 8)
    assert full["labels"].tolist() == full["input_ids"].tolist()

    tail = len(ds[len(ds) - 1]["input_ids"])
    assert 2 <= tail < 8, "DOCS must leave a short tail block"
    mixed = ds.collate([ds[0], ds[len(ds) - 1]])
    assert mixed["attention_mask"].sum(dim=1).tolist() == [8, tail]
    assert mixed["labels"][1, tail:].eq(-100).all()


def test_index_past_the_end_raises(bpe_tokenizer, tmp_path):
    ds = build_packed(TableSource(pa.table({"text": DOCS})), "train", bpe_tokenizer, 8, tmp_path)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_tokenizer_without_eos_is_refused(wordpiece_tokenizer, tmp_path):
    with pytest.raises(InvalidConfig, match="EOS"):
        build_packed(
            TableSource(pa.table({"text": DOCS})), "train", wordpiece_tokenizer, 8, tmp_path
        )
