"""Prompt/completion token stores: loss on completion tokens only, EOS, truncation."""

from __future__ import annotations

import pyarrow as pa

from snowtrain.trainer.data.store import IGNORE_INDEX
from snowtrain.trainer.data.tokenize import build_causal_lm


class TableSource:
    def __init__(self, table: pa.Table, batch_rows: int = 2) -> None:
        self.table, self.batch_rows = table, batch_rows

    def iter_batches(self, split: str = "train"):
        yield from self.table.to_batches(max_chunksize=self.batch_rows)


PAIRS = pa.table(
    {
        "prompt": ["question: what is two plus two? answer:", "once upon a time", "hi"],
        "completion": [" four", " there was a small model", " the end"],
    }
)


def ids(tok, text: str, special: bool) -> list[int]:
    return tok(text, add_special_tokens=special)["input_ids"]


def test_labels_mask_the_prompt_and_end_with_eos(bpe_tokenizer, tmp_path):
    ds = build_causal_lm(TableSource(PAIRS), "train", bpe_tokenizer, 64, tmp_path)
    assert len(ds) == 3
    for i in range(3):
        prompt = ids(bpe_tokenizer, PAIRS.column("prompt")[i].as_py(), True)
        completion = ids(bpe_tokenizer, PAIRS.column("completion")[i].as_py(), False)
        item = ds[i]
        assert item["input_ids"].tolist() == [*prompt, *completion, bpe_tokenizer.eos_token_id]
        labels = item["labels"].tolist()
        assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert labels[len(prompt) :] == [*completion, bpe_tokenizer.eos_token_id]


def test_long_rows_lose_the_oldest_prompt_tokens_first(bpe_tokenizer, tmp_path):
    table = pa.table({"prompt": ["once upon a time " * 20], "completion": [" the end"]})
    ds = build_causal_lm(TableSource(table), "train", bpe_tokenizer, 16, tmp_path)
    item = ds[0]
    completion = [*ids(bpe_tokenizer, " the end", False), bpe_tokenizer.eos_token_id]
    assert len(item["input_ids"]) == 16
    assert item["input_ids"].tolist()[-len(completion) :] == completion
    assert (item["labels"] != IGNORE_INDEX).sum() == len(completion)


def test_completion_longer_than_max_len_is_cut(bpe_tokenizer, tmp_path):
    table = pa.table({"prompt": ["hi"], "completion": [" there was a small model " * 10]})
    ds = build_causal_lm(TableSource(table), "train", bpe_tokenizer, 8, tmp_path)
    assert len(ds[0]["input_ids"]) == 8
    assert (ds[0]["labels"] != IGNORE_INDEX).all()  # no prompt left, all completion


def test_collate_pads_labels_with_ignore_index(bpe_tokenizer, tmp_path):
    ds = build_causal_lm(TableSource(PAIRS), "train", bpe_tokenizer, 64, tmp_path)
    batch = ds.collate([ds[0], ds[2]])
    short = 0 if len(ds[0]["input_ids"]) < len(ds[2]["input_ids"]) else 1
    n = int(batch["attention_mask"][short].sum())
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    # GPT-2-like tokenizers have no pad token: EOS pads (masked out by attention and labels).
    assert (batch["input_ids"][short, n:] == bpe_tokenizer.eos_token_id).all()
