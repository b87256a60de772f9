"""Classification token stores: label ids, truncation, batching invariance, collate, resume."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from snowtrain.trainer.data.store import TokenDataset
from snowtrain.trainer.data.tokenize import Encoder, build_classification
from snowtrain.trainer.errors import DataError

LABEL2ID = {"negative": 0, "neutral": 1, "positive": 2}


class TableSource:
    """Role-named batches from an in-memory table, cut into ``batch_rows`` slices."""

    def __init__(self, table: pa.Table, batch_rows: int = 4) -> None:
        self.table, self.batch_rows = table, batch_rows

    def iter_batches(self, split: str = "train"):
        yield from self.table.to_batches(max_chunksize=self.batch_rows)


def rows(n: int) -> pa.Table:
    names = list(LABEL2ID)
    return pa.table(
        {
            "text": [f"the movie was great number {i} " * (1 + i % 4) for i in range(n)],
            "label": [names[i % 3] for i in range(n)],
        }
    )


def test_items_carry_tokens_and_label_ids(wordpiece_tokenizer, tmp_path):
    ds = build_classification(
        TableSource(rows(10)), "train", wordpiece_tokenizer, LABEL2ID, 16, tmp_path
    )
    assert len(ds) == 10
    item = ds[4]
    expected = wordpiece_tokenizer(
        rows(10).column("text")[4].as_py(), truncation=True, max_length=16
    )
    assert item["input_ids"].tolist() == expected["input_ids"]
    assert item["input_ids"][0] == wordpiece_tokenizer.cls_token_id
    assert int(item["labels"]) == LABEL2ID["neutral"]  # row 4 -> names[1]
    assert max(ds.lengths) == 16  # truncated to max_len
    assert ds.meta["labels"] == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("threads", [1, 4])
def test_batch_size_and_threads_do_not_change_the_store(wordpiece_tokenizer, tmp_path, threads):
    a = build_classification(
        TableSource(rows(23), 3),
        "train",
        wordpiece_tokenizer,
        LABEL2ID,
        32,
        tmp_path / "a",
        threads=threads,
    )
    b = build_classification(
        TableSource(rows(23), 1000), "train", wordpiece_tokenizer, LABEL2ID, 32, tmp_path / "b"
    )
    for i in range(23):
        assert torch.equal(a[i]["input_ids"], b[i]["input_ids"])
        assert int(a[i]["labels"]) == int(b[i]["labels"])


def test_unknown_label_is_a_data_error_and_leaves_no_store(wordpiece_tokenizer, tmp_path):
    table = pa.table({"text": ["a", "b"], "label": ["positive", "furious"]})
    with pytest.raises(DataError, match="furious") as err:
        build_classification(
            TableSource(table), "validation", wordpiece_tokenizer, LABEL2ID, 8, tmp_path
        )
    assert err.value.bad_rows == 1
    assert list(tmp_path.iterdir()) == []


def test_collate_pads_and_stacks_labels(wordpiece_tokenizer, tmp_path):
    ds = build_classification(
        TableSource(rows(6)), "train", wordpiece_tokenizer, LABEL2ID, 64, tmp_path
    )
    batch = ds.collate([ds[0], ds[3]])
    longest = max(len(ds[0]["input_ids"]), len(ds[3]["input_ids"]))
    assert batch["input_ids"].shape == (2, longest)
    assert batch["labels"].tolist() == [0, 0]
    short = 0 if len(ds[0]["input_ids"]) < longest else 1
    n = int(batch["attention_mask"][short].sum())
    assert (batch["input_ids"][short, n:] == wordpiece_tokenizer.pad_token_id).all()
    assert batch["input_ids"].dtype == torch.long


def test_store_reopens_from_disk_and_pickles_without_copying(wordpiece_tokenizer, tmp_path):
    built = build_classification(
        TableSource(rows(8)), "train", wordpiece_tokenizer, LABEL2ID, 32, tmp_path
    )
    reopened = TokenDataset(built.directory)
    assert torch.equal(reopened[7]["input_ids"], built[7]["input_ids"])
    built[0]  # open the memmaps
    clone = pickle.loads(pickle.dumps(built))  # what a DataLoader worker receives
    assert len(pickle.dumps(built)) < 2000
    assert torch.equal(clone[5]["input_ids"], built[5]["input_ids"])


def test_epoch_order_is_a_seeded_permutation(wordpiece_tokenizer, tmp_path):
    ds = build_classification(
        TableSource(rows(50)), "train", wordpiece_tokenizer, LABEL2ID, 8, tmp_path
    )
    first = ds.epoch_order(seed=42, epoch=0)
    assert sorted(first.tolist()) == list(range(50))
    assert np.array_equal(first, ds.epoch_order(seed=42, epoch=0))
    assert not np.array_equal(first, ds.epoch_order(seed=42, epoch=1))


def test_rebuild_replaces_the_previous_store(wordpiece_tokenizer, tmp_path):
    build_classification(TableSource(rows(9)), "train", wordpiece_tokenizer, LABEL2ID, 8, tmp_path)
    ds = build_classification(
        TableSource(rows(4)), "train", wordpiece_tokenizer, LABEL2ID, 8, tmp_path
    )
    assert len(TokenDataset(ds.directory)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classification-train"]


@pytest.mark.parametrize("name", ["wordpiece_tokenizer", "bpe_tokenizer", "roberta_like"])
@pytest.mark.parametrize(
    ("special", "max_len"), [(True, 8), (False, None), (True, None), (True, 3), (True, 2)]
)
@pytest.mark.parametrize("side", ["right", "left"])
def test_encoder_matches_the_hugging_face_call(request, name, special, max_len, side):
    """Same ids as the tokenizer's own call, whether the special tokens come from the Rust
    post-processor or are added in numpy (max_len 2 leaves no room for content: the
    post-processor's own path)."""
    tok = request.getfixturevalue(name)
    tok.truncation_side = side
    texts = [t for t in rows(7).column("text").to_pylist()] + ["", "ünïcödé text!", "word " * 50]
    before = tok.backend_tokenizer.truncation
    ids, lengths = Encoder(tok, special=special, max_len=max_len)(texts)
    listed = Encoder(tok, special=special, max_len=max_len).lists(texts)
    # The job's truncation lives on a private copy: the caller's tokenizer is unchanged.
    assert tok.backend_tokenizer.truncation == before
    expected = tok(
        texts, add_special_tokens=special, truncation=max_len is not None, max_length=max_len
    )["input_ids"]
    assert lengths.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]
    assert listed == expected


@pytest.fixture
def roberta_like(bpe_tokenizer):
    """A byte-level BPE whose post-processor wraps every text in <s> ... </s> (RoBERTa's)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = bpe_tokenizer.backend_tokenizer
    backend.add_special_tokens(["<s>", "</s>"])
    bos, eos = backend.token_to_id("<s>"), backend.token_to_id("</s>")
    backend.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("threads", [1, 3])
def test_tokens_reach_disk_batch_by_batch(wordpiece_tokenizer, tmp_path, threads):
    """Nothing accumulates in memory: a batch is on disk before the source is ``threads`` + 1
    batches on (one batch is read ahead while up to ``threads`` are tokenized)."""
    sizes: list[int] = []

    class Watching(TableSource):
        def iter_batches(self, split="train"):
            for batch in super().iter_batches(split):
                partial = list(tmp_path.glob("classification-train.tmp-*/ids.bin"))
                sizes.append(partial[0].stat().st_size if partial else -1)
                yield batch

    source = Watching(rows(100), 10)
    build_classification(
        source, "train", wordpiece_tokenizer, LABEL2ID, 32, tmp_path, threads=threads
    )
    window = threads + 1
    assert len(sizes) == 10 and sizes[0] == 0
    assert all(sizes[k] > sizes[k - window] for k in range(window, len(sizes)))
