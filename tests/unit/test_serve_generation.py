"""Per-row completion bookkeeping (stop strings, limits, streaming), model-dir detection, CPUs.

RowTracker is driven the way `generate` drives it: one call per decoding step with the whole
batch's token ids. Tokens here are character codes so expected text is easy to read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from snowtrain.serve.generation import CompletionItem, RowTracker, _held_back
from snowtrain.serve.model_dir import ModelDirError, Task, inspect_model_dir

EOS = 0


def decode(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def run(tracker: RowTracker, rows: list[str]) -> list[bool]:
    """Feed each row's characters step by step; return the last step's finished flags."""
    ids = torch.zeros((len(rows), 1), dtype=torch.long)
    flags: list[bool] = []
    for step in range(max(len(r) for r in rows)):
        col = [ord(r[step]) if step < len(r) else EOS for r in rows]
        ids = torch.cat([ids, torch.tensor(col).unsqueeze(1)], dim=1)
        flags = tracker(ids, torch.zeros(1)).tolist()
        if all(flags):
            break
    return flags


def test_rows_finish_independently_on_limit_stop_string_and_eos() -> None:
    items = [
        CompletionItem("a", max_tokens=3),
        CompletionItem("b", max_tokens=50, stop=("END",)),
        CompletionItem("c", max_tokens=50),
    ]
    tracker = RowTracker(items, [1, 2, 3], decode, {EOS})
    flags = run(tracker, ["abcdef", "hello END tail", "hi"])
    assert flags == [True, True, True]
    a, b, c = tracker.finish()
    assert (a.text, a.finish_reason, a.completion_tokens) == ("abc", "length", 3)
    assert (b.text, b.finish_reason) == ("hello ", "stop")
    assert (c.text, c.finish_reason, c.completion_tokens) == ("hi", "stop", 2)  # EOS
    assert [r.prompt_tokens for r in (a, b, c)] == [1, 2, 3]


def test_stream_never_shows_text_the_stop_string_later_removes() -> None:
    pieces: list[str] = []
    item = CompletionItem("p", max_tokens=50, stop=("STOP",), on_text=pieces.append)
    tracker = RowTracker([item], [1], decode, {EOS})
    run(tracker, ["abc STOP rest"])
    (res,) = tracker.finish()
    assert res.text == "abc "
    assert "".join(pieces) == "abc "
    assert all("S" not in p for p in pieces)


def test_stream_releases_held_back_prefix_when_it_is_not_a_stop() -> None:
    pieces: list[str] = []
    item = CompletionItem("p", max_tokens=6, stop=("STOP",), on_text=pieces.append)
    tracker = RowTracker([item], [1], decode, {EOS})
    run(tracker, ["ab STx"])
    (res,) = tracker.finish()
    assert res.finish_reason == "length"
    assert "".join(pieces) == res.text == "ab STx"
    assert pieces[-1].startswith("ST")  # held while it could have been the stop string


def test_held_back_covers_partial_utf8_and_stop_prefixes() -> None:
    assert _held_back("hello\ufffd", ()) == 1
    assert _held_back("hello wor", ("world",)) == 3
    assert _held_back("hello", ("xyz",)) == 0


def test_cancelled_row_stops_at_the_next_step() -> None:
    item = CompletionItem("p", max_tokens=50)
    tracker = RowTracker([item, CompletionItem("q", max_tokens=50)], [1, 1], decode, {EOS})
    ids = torch.tensor([[1, ord("a")], [1, ord("b")]])
    assert tracker(ids, torch.zeros(1)).tolist() == [False, False]
    item.cancelled.set()
    ids = torch.cat([ids, torch.tensor([[ord("c")], [ord("d")]])], dim=1)
    assert tracker(ids, torch.zeros(1)).tolist() == [True, False]


def test_greedy_requests_share_a_group_regardless_of_top_p() -> None:
    a = CompletionItem("x", temperature=0, top_p=0.5)
    b = CompletionItem("y", temperature=0, top_p=1.0)
    c = CompletionItem("z", temperature=0.7, top_p=0.9)
    assert a.sampling_key == b.sampling_key != c.sampling_key


# -- model directories ---------------------------------------------------------------------


def _dir(tmp_path: Path, config: dict, lineage: dict | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if lineage is not None:
        (tmp_path / "snowtrain.json").write_text(json.dumps(lineage))
    return tmp_path


def test_task_and_name_come_from_snowtrain_json(tmp_path: Path) -> None:
    d = _dir(
        tmp_path,
        {"architectures": ["GPT2LMHeadModel"]},
        {"task": "classification", "name": "reviews", "labels": ["bad", "good"]},
    )
    info = inspect_model_dir(d)
    assert (info.task, info.name, info.labels) == (Task.CLASSIFICATION, "reviews", ["bad", "good"])
    assert inspect_model_dir(d, name="override").name == "override"


@pytest.mark.parametrize("task", ["causal-lm", "pretrain"])
def test_causal_tasks_serve_completions(tmp_path: Path, task: str) -> None:
    d = _dir(tmp_path, {}, {"task": task, "name": "lm"})
    assert inspect_model_dir(d).task is Task.COMPLETION


def test_without_snowtrain_json_the_architecture_decides(tmp_path: Path) -> None:
    d = _dir(
        tmp_path,
        {"architectures": ["BertForSequenceClassification"], "id2label": {"1": "b", "0": "a"}},
    )
    info = inspect_model_dir(d)
    assert (info.task, info.labels, info.name) == (Task.CLASSIFICATION, ["a", "b"], d.name)
    (tmp_path / "lm").mkdir()
    d2 = _dir(tmp_path / "lm", {"architectures": ["LlamaForCausalLM"]})
    assert inspect_model_dir(d2).task is Task.COMPLETION


def test_unusable_directories_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"no config\.json"):
        inspect_model_dir(tmp_path)
    _dir(tmp_path, {"architectures": ["BertModel"]})
    with pytest.raises(ModelDirError, match="cannot tell the task"):
        inspect_model_dir(tmp_path)
    _dir(tmp_path, {}, {"task": "translation"})
    with pytest.raises(ModelDirError, match="unknown task 'translation'"):
        inspect_model_dir(tmp_path)
