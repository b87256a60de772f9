"""Ingest keeps the garbage collector off long-lived objects, and only while it runs."""

from __future__ import annotations

import gc
import threading
import weakref

import pyarrow as pa
import pytest

from snowtrain.trainer.data.gc_freeze import frozen_long_lived_objects
from snowtrain.trainer.data.tokenize import build_classification
from snowtrain.trainer.errors import DataError


class Node:
    """A tracked object that can sit in a reference cycle."""

    other: Node | None = None


def test_objects_alive_at_the_start_are_skipped_until_the_end() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_long_lived_objects():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_are_still_collected() -> None:
    """Ingest's own garbage (the connector's cycles) is reclaimed during a long ingest."""
    with frozen_long_lived_objects():
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        del a, b
        gc.collect()
        assert alive() is None


def test_cycles_older_than_the_block_are_reclaimed_after_it() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    with frozen_long_lived_objects():
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: the collector does not look at it
    gc.collect()
    assert alive() is None


def test_nested_and_concurrent_blocks_unfreeze_once_the_last_one_exits() -> None:
    inner_done, outer_may_exit = threading.Event(), threading.Event()

    def other_thread() -> None:
        with frozen_long_lived_objects():
            inner_done.set()
            outer_may_exit.wait(60)

    with frozen_long_lived_objects():
        with frozen_long_lived_objects():
            pass
        assert gc.get_freeze_count() > 0  # the inner exit did not unfreeze
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert inner_done.wait(60)
    assert gc.get_freeze_count() > 0  # the other thread's block is still open
    outer_may_exit.set()
    thread.join(60)
    assert gc.get_freeze_count() == 0


class Batches:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def iter_batches(self, split: str = "train"):
        yield from self.table.to_batches(max_chunksize=2)


@pytest.mark.parametrize("labels", [["positive", "negative"], ["positive", "furious"]])
def test_a_build_leaves_nothing_frozen_whether_it_succeeds_or_fails(
    wordpiece_tokenizer, tmp_path, labels
) -> None:
    table = pa.table({"text": ["good film", "bad film"], "label": labels})
    label2id = {"negative": 0, "positive": 1}
    try:
        build_classification(Batches(table), "train", wordpiece_tokenizer, label2id, 8, tmp_path)
    except DataError:
        assert "furious" in labels
    assert gc.get_freeze_count() == 0
