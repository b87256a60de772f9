"""The training loop on in-memory datasets: it learns, resumes exactly, and stops cleanly.

The data layer is exercised elsewhere (against the Snowflake emulator); here a tiny list
dataset with the same interface (map-style, ``collate``) isolates the loop itself.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch.utils.data import Dataset

from snowtrain.api.spec import CheckpointSpec, TrainingSpec
from snowtrain.trainer.checkpoint import CheckpointManager
from snowtrain.trainer.distributed import World
from snowtrain.trainer.errors import Preempted
from snowtrain.trainer.loop import (
    EpochOrder,
    FlopRates,
    Objective,
    Precision,
    RunContext,
    TrainData,
    evaluate,
    fit,
    seed_everything,
)
from snowtrain.trainer.progress import Reporter

PAD = 0


class ListDataset(Dataset):
    """Examples as dicts of 1-D LongTensors, padded by ``collate`` like the data layer's."""

    def __init__(self, examples: list[dict[str, torch.Tensor]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.examples[i]

    @staticmethod
    def collate(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), PAD)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            ids[row, : len(b["input_ids"])] = b["input_ids"]
            mask[row, : len(b["input_ids"])] = 1
        if batch[0]["labels"].dim() == 0:  # class ids
            labels = torch.stack([b["labels"] for b in batch])
        else:  # token targets, -100 on padding
            labels = torch.full((len(batch), width), -100)
            for row, b in enumerate(batch):
                labels[row, : len(b["labels"])] = b["labels"]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sentiment_examples(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """3 classes; each sentence mixes neutral filler with words only its class uses."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.randrange(3)
        cue = [10 + 10 * label + rng.randrange(10) for _ in range(2)]
        filler = [40 + rng.randrange(40) for _ in range(rng.randrange(4, 10))]
        ids = filler + cue
        rng.shuffle(ids)
        out.append({"input_ids": torch.tensor([2, *ids]), "labels": torch.tensor(label)})
    return out


def tiny_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=3,
        pad_token_id=PAD,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=64,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def counting_examples(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Sequences counting up mod 60 from a random start: perfectly predictable after 1 token."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(60)
        ids = torch.tensor([1 + (start + i) % 60 for i in range(16)])
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


def quiet() -> Reporter:
    return Reporter(interval_seconds=0.0, enabled=False)


def run_classifier(
    tmp_path, *, spec: TrainingSpec, stop_at: int | None = None, calls: list | None = None
):
    """Train the tiny classifier; SIGTERM (``should_stop``) from its ``stop_at``-th check on,
    each check appended to ``calls``."""
    seed_everything(spec.seed)
    model = tiny_bert()
    ckpt = CheckpointManager(tmp_path / "ckpt", keep=2, every_steps=spec.checkpoint.every_steps)
    calls = [] if calls is None else calls

    def should_stop() -> bool:
        calls.append(1)
        return stop_at is not None and len(calls) >= stop_at

    return fit(
        model,
        TrainData(
            ListDataset(sentiment_examples(240, 1)),
            ListDataset(sentiment_examples(60, 2)),
            ListDataset.collate,
        ),
        spec,
        Objective("classification", num_labels=3),
        RunContext(World(), quiet(), checkpoints=ckpt, should_stop=should_stop),
    )


SPEC = TrainingSpec(
    epochs=5,
    batch_size=8,
    learning_rate=2e-3,
    warmup_ratio=0.1,
    gradient_accumulation_steps=2,
    checkpoint=CheckpointSpec(every_steps=10, every_minutes=None, keep=2),
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread, above all on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted classifier run, shared by the quality and the resume test."""
    return run_classifier(tmp_path_factory.mktemp("reference"), spec=SPEC)


@pytest.mark.slow
def test_classifier_learns_the_cue_words(reference):
    result = reference
    assert result.metrics["evalAccuracy"] >= 0.9
    assert result.metrics["evalMacroF1"] >= 0.9
    assert result.metrics["steps"] == result.total_steps == 75  # 30 batches of 8 = 15 steps/epoch
    assert result.metrics["trainLoss"] < 1.0


@pytest.mark.slow
def test_preempted_run_resumes_to_the_same_result(tmp_path, reference):
    """Stop after step 33 (SIGTERM path), resume from that checkpoint: identical to no stop."""
    with pytest.raises(Preempted):
        run_classifier(tmp_path / "b", spec=SPEC, stop_at=33)
    latest = CheckpointManager(tmp_path / "b" / "ckpt").latest()
    assert latest is not None and latest.name == "step-00000033"
    resumed = run_classifier(tmp_path / "b", spec=SPEC)
    assert resumed.resumed_from_step == 33
    for key in ("trainLoss", "evalLoss", "evalAccuracy", "steps"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_sigterm_during_an_evaluation_saves_at_once_and_resumes_to_the_same_result(
    tmp_path, reference
):
    """SIGTERM arrives in the middle of the evaluation at step 10: the evaluation is cut
    short (the pod's grace period must not go into it), step 10 is checkpointed and the run
    ends Preempted. Resuming from there gives the uninterrupted run's result."""
    spec = SPEC.model_copy(update={"eval_every_steps": 10})
    # One stop check per step, then one per evaluation batch: call 12 is the 2nd eval batch.
    calls = []
    with pytest.raises(Preempted):
        run_classifier(tmp_path, spec=spec, stop_at=12, calls=calls)
    assert len(calls) == 12  # nothing more was evaluated after the signal
    assert CheckpointManager(tmp_path / "ckpt").latest().name == "step-00000010"
    resumed = run_classifier(tmp_path, spec=spec)
    assert resumed.resumed_from_step == 10
    for key in ("trainLoss", "evalLoss", "evalAccuracy", "steps"):
        assert resumed.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-6, abs=1e-7)


def test_causal_lm_loss_falls_and_perplexity_is_reported(tmp_path):
    seed_everything(0)
    model = tiny_gpt2()
    spec = TrainingSpec(max_steps=40, batch_size=8, learning_rate=3e-3, lr_scheduler="constant")
    result = fit(
        model,
        TrainData(
            ListDataset(counting_examples(160, 1)),
            ListDataset(counting_examples(16, 2)),
            ListDataset.collate,
        ),
        spec,
        Objective("causal-lm"),
        RunContext(World(), quiet()),
    )
    # 60 equally likely tokens: an untrained model sits near ln(60) = 4.1 nats/token.
    assert result.metrics["evalLoss"] < 1.0
    assert result.metrics["perplexity"] < 3.0
    assert result.metrics["tokensTrained"] == 40 * 8 * 16


def test_tokens_are_counted_in_batches_without_a_mask():
    """Packed blocks reach the loop without ``attention_mask``: every position is a token."""

    def unmasked(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        full = ListDataset.collate(batch)
        assert bool(full.pop("attention_mask").all())  # the examples are equal-length
        return full

    seed_everything(0)
    spec = TrainingSpec(max_steps=3, batch_size=8, learning_rate=1e-3)
    result = fit(
        tiny_gpt2(),
        TrainData(ListDataset(counting_examples(32, 1)), None, unmasked),
        spec,
        Objective("pretrain"),
        RunContext(World(), quiet()),
    )
    assert result.metrics["tokensTrained"] == 3 * 8 * 16
    assert result.metrics["tokensPerSecond"] > 0


def test_mfu_is_reported_when_the_model_flops_and_device_peak_are_known(capsys):
    """A pretraining run on a GPU of known peak reports MFU per device; without, none."""
    spec = TrainingSpec(max_steps=3, batch_size=8, learning_rate=1e-3)
    data = TrainData(ListDataset(counting_examples(32, 1)), None, ListDataset.collate)
    objective = Objective("pretrain")
    seed_everything(0)
    quiet_run = fit(tiny_gpt2(), data, spec, objective, RunContext(World(), quiet()))
    assert "mfu" not in quiet_run.metrics

    seed_everything(0)
    reporter = Reporter(interval_seconds=0.0)
    result = fit(
        tiny_gpt2(),
        data,
        spec,
        objective,
        RunContext(World(), reporter),
        FlopRates(per_token=6e6, peak_per_device=1e12),
    )
    expected = 6e6 * result.metrics["tokensPerSecond"] / 1e12
    assert result.metrics["mfu"] == pytest.approx(expected, abs=1e-4)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    # Each line's MFU is its own throughput's (how fast the machine is does not matter).
    assert progress and all(
        e["mfu"] == pytest.approx(6e6 * e["tokensPerSecond"] / 1e12, abs=1e-4) for e in progress
    )


def test_progress_events_are_rate_limited_but_the_last_step_always_reports(tmp_path, capsys):
    seed_everything(0)
    spec = TrainingSpec(max_steps=6, batch_size=8, learning_rate=1e-3)
    fit(
        tiny_gpt2(),
        TrainData(ListDataset(counting_examples(64, 1)), None, ListDataset.collate),
        spec,
        Objective("causal-lm"),
        RunContext(World(), Reporter(interval_seconds=3600)),
    )
    import json

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 6]  # first step, then nothing until the last
    assert events[0]["event"] == "start" and events[0]["totalSteps"] == 6
    assert events[0].get("resumedFromStep") is None  # unset fields are left out
    assert {"loss", "learningRate", "tokensPerSecond", "etaSeconds", "epoch"} <= set(progress[-1])


def test_progress_lines_carry_the_latest_validation_loss(capsys):
    """A reader of progress lines alone (a log tail, the operator) sees the latest
    validation loss next to the training loss, from the first evaluation on."""
    seed_everything(0)
    spec = TrainingSpec(max_steps=6, batch_size=8, learning_rate=3e-3, eval_every_steps=2)
    fit(
        tiny_gpt2(),
        TrainData(
            ListDataset(counting_examples(64, 1)),
            ListDataset(counting_examples(16, 2)),
            ListDataset.collate,
        ),
        spec,
        Objective("causal-lm"),
        RunContext(World(), Reporter(interval_seconds=0.0)),
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    evals = {e["step"]: e["evalLoss"] for e in events if e["event"] == "eval"}
    progress = {e["step"]: e.get("evalLoss") for e in events if e["event"] == "progress"}
    assert sorted(evals) == [2, 4, 6]
    # step 2's line is written before step 2's evaluation runs
    assert progress == {1: None, 2: None, 3: evals[2], 4: evals[2], 5: evals[4], 6: evals[4]}


def test_compile_without_a_compiler_trains_eagerly_and_says_why(
    tmp_path, capsys, caplog, monkeypatch
):
    """The trainer image ships no compiler; ``compile: true`` there must not fail kernel by
    kernel in silence: the run trains eagerly, warns with the reason, and its start event
    says ``compiled: false``."""
    from snowtrain.trainer.compilation import missing_compiler

    assert missing_compiler(torch.device("cpu")) is None  # this machine has g++
    assert missing_compiler(torch.device("cuda")) is None  # and cc
    monkeypatch.setenv("PATH", str(tmp_path))  # now nothing to compile with
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    assert "C compiler" in missing_compiler(torch.device("cuda"))
    assert "C++ compiler" in missing_compiler(torch.device("cpu"))

    seed_everything(0)
    spec = TrainingSpec(max_steps=2, batch_size=8, learning_rate=1e-3, compile=True)
    with caplog.at_level("WARNING"):
        result = fit(
            tiny_gpt2(),
            TrainData(ListDataset(counting_examples(16, 1)), None, ListDataset.collate),
            spec,
            Objective("causal-lm"),
            RunContext(World(), Reporter(interval_seconds=0.0)),
        )
    assert result.step == 2
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["event"] == "start" and start["compiled"] is False
    assert "no C++ compiler" in caplog.text and "eager mode" in caplog.text


def test_epoch_order_shards_like_distributed_sampler():
    """Two ranks see disjoint halves of the same seeded permutation (padded to equal size)."""
    ranks = [EpochOrder(10, 2, seed=3, world=World(rank=r, size=2)) for r in range(2)]
    shards = [r.shard(0) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0]) | set(shards[1]) == set(range(10))
    assert ranks[0].shard(1) != shards[0]  # a new permutation each epoch


def test_a_rank_holding_its_own_share_cycles_it_to_the_largest_share():
    """Sharded ingest: each rank permutes its own examples (a new order each epoch, the same
    in every run, so a resume is exact) and repeats some, so ranks of unequal shares take
    the same number of steps; with lengths it still groups them."""
    small = EpochOrder(7, 2, seed=3, world=World(rank=1, size=2), shard_size=9)
    order = small.shard(0)
    assert len(order) == 9 and set(order) == set(range(7))
    assert order[7:] == order[:2]  # the lap that pads is the same permutation again
    assert small.batches_per_epoch == 5
    assert EpochOrder(7, 2, 3, World(rank=1, size=2), shard_size=9).shard(0) == order
    assert small.shard(1) != order
    rng = random.Random(2)
    lengths = [rng.randrange(4, 256) for _ in range(400)]
    grouped = EpochOrder(400, 16, 3, World(rank=0, size=2), lengths=lengths, shard_size=400)
    plain = EpochOrder(400, 16, 3, World(rank=0, size=2), shard_size=400)
    assert sorted(grouped.shard(0)) == list(range(400))
    assert padding_fraction(grouped, lengths) < padding_fraction(plain, lengths) / 2


def padding_fraction(order: EpochOrder, lengths: list[int], epoch: int = 0) -> float:
    """Share of the padded batches' positions that are padding."""
    shard = order.shard(epoch)
    batches = [shard[i : i + order.batch_size] for i in range(0, len(shard), order.batch_size)]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def test_length_grouped_order_is_a_seeded_permutation_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randrange(4, 256) for _ in range(4000)]
    grouped = EpochOrder(4000, 16, seed=3, world=World(), lengths=lengths)
    plain = EpochOrder(4000, 16, seed=3, world=World())

    assert sorted(grouped.shard(0)) == list(range(4000))
    assert grouped.shard(0) == EpochOrder(4000, 16, 3, World(), lengths=lengths).shard(0)
    assert grouped.shard(1) != grouped.shard(0)
    # Uniform lengths in batches of 16: about 45% of a random batch is padding.
    assert padding_fraction(plain, lengths) > 0.35
    assert padding_fraction(grouped, lengths) < 0.05


def test_length_grouped_ranks_split_each_global_batch():
    """Two ranks: disjoint shards, and in every step both ranks pad to about the same width."""
    rng = random.Random(1)
    lengths = [rng.randrange(4, 256) for _ in range(2000)]
    ranks = [
        EpochOrder(2000, 8, seed=5, world=World(rank=r, size=2), lengths=lengths) for r in range(2)
    ]
    shards = [r.shard(0) for r in ranks]
    assert set(shards[0]) | set(shards[1]) == set(range(2000))
    assert len(shards[0]) == len(shards[1]) == 1000
    assert padding_fraction(ranks[0], lengths) < 0.05
    widths = [[max(lengths[i] for i in s[k : k + 8]) for k in range(0, 1000, 8)] for s in shards]
    assert sum(abs(a - b) for a, b in zip(*widths, strict=True)) / len(widths[0]) < 8


class SizedListDataset(ListDataset):
    """Knows its row lengths, as the data layer's datasets do."""

    @property
    def lengths(self) -> list[int]:
        return [len(e["input_ids"]) for e in self.examples]


def varied_length_examples(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Classification rows of 2 to 59 tokens, as texts in a table vary."""
    rng = random.Random(seed)
    return [
        {"input_ids": torch.arange(2, 2 + k) % 100, "labels": torch.tensor(k % 3)}
        for k in (rng.randrange(2, 60) for _ in range(n))
    ]


class PaddingCounter:
    """``ListDataset.collate`` that also counts real and padded positions."""

    def __init__(self) -> None:
        self.real = self.positions = 0

    def __call__(self, batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        out = ListDataset.collate(batch)
        self.real += int(out["attention_mask"].sum())
        self.positions += out["attention_mask"].numel()
        return out

    @property
    def padding(self) -> float:
        return 1 - self.real / self.positions


@pytest.mark.parametrize("group_by_length", [True, False])
def test_the_loop_groups_batches_by_the_datasets_lengths(group_by_length):
    collate = PaddingCounter()
    seed_everything(0)
    spec = TrainingSpec(max_steps=16, batch_size=16, group_by_length=group_by_length)
    fit(
        tiny_bert(),
        TrainData(SizedListDataset(varied_length_examples(2000, 2)), None, collate),
        spec,
        Objective("classification", num_labels=3),
        RunContext(World(), quiet()),
    )
    assert collate.padding < 0.1 if group_by_length else collate.padding > 0.3


def test_evaluation_visits_rows_by_length_with_the_same_metrics():
    examples = varied_length_examples(300, 3)
    seed_everything(0)
    model = tiny_bert()
    results, paddings = [], []
    for data in (ListDataset(examples), SizedListDataset(examples)):
        collate = PaddingCounter()
        kwargs = {"task": "classification", "batch_size": 16, "num_labels": 3}
        precision = Precision(None, None)
        results.append(evaluate(model, data, collate, precision=precision, world=World(), **kwargs))
        paddings.append(collate.padding)
    assert results[1] == pytest.approx(results[0], rel=1e-5)
    assert paddings[0] > 0.3 and paddings[1] < 0.05


def test_a_checkpoint_of_another_model_is_refused_not_half_loaded(tmp_path):
    from snowtrain.trainer.errors import InvalidConfig

    ckpt = CheckpointManager(tmp_path, every_steps=1)
    spec = TrainingSpec(max_steps=1, batch_size=4)
    data = TrainData(ListDataset(counting_examples(8, 1)), None, ListDataset.collate)
    grouped = (spec, Objective("causal-lm"), RunContext(World(), quiet(), checkpoints=ckpt))
    fit(tiny_gpt2(), data, *grouped)
    with pytest.raises(InvalidConfig, match="delete the checkpoints"):
        fit(tiny_bert(), data, *grouped)
