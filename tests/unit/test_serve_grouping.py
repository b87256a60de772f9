"""Splitting a classifier batch into padded forward passes: the optimal partition, the cost
model fitted at load, and the padded tensors built without `tokenizer.pad`."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from snowtrain.serve.grouping import (
    DEFAULT_COST,
    ForwardCost,
    calibration_shapes,
    fit_forward_cost,
    groups_cost,
    measure,
    optimal_groups,
)


def greedy_groups(lengths: list[int], min_ratio: float = 0.7) -> list[list[int]]:
    """The heuristic the dynamic program replaced: a group admits texts >= 70% of its longest."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] >= min_ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def set_partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for k in range(len(part)):
            yield [*part[:k], [first, *part[k]], *part[k + 1 :]]


def random_cost(rng: random.Random) -> ForwardCost:
    return ForwardCost(
        per_forward=rng.choice([0.0, 1e-3, 5e-3, 20e-3, 0.1]),
        per_token=rng.choice([1e-5, 1e-4, 3e-4]),
        per_attention=rng.choice([0.0, 1e-7, 1e-6, 1e-5]),
    )


def assert_partition(groups: list[list[int]], n: int) -> None:
    assert sorted(i for g in groups for i in g) == list(range(n))
    assert all(groups)


def test_dynamic_program_is_optimal_against_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(150):
        n = rng.randint(1, 7)
        lengths = [rng.randint(2, 80) for _ in range(n)]
        cost = random_cost(rng)
        groups = optimal_groups(lengths, cost)
        assert_partition(groups, n)
        brute = min(groups_cost(lengths, p, cost) for p in set_partitions(list(range(n))))
        assert groups_cost(lengths, groups, cost) == pytest.approx(brute, rel=1e-12)


def test_never_worse_than_the_greedy_heuristic() -> None:
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 64)
        lengths = [rng.randint(2, rng.choice([16, 64, 512])) for _ in range(n)]
        cost = random_cost(rng)
        groups = optimal_groups(lengths, cost)
        assert_partition(groups, n)
        greedy = groups_cost(lengths, greedy_groups(lengths), cost)
        assert groups_cost(lengths, groups, cost) <= greedy * (1 + 1e-12)


def test_groups_run_longest_first_with_ties_in_request_order() -> None:
    lengths = [12, 40, 12, 41, 12, 40]
    groups = optimal_groups(lengths, ForwardCost(per_forward=1.0, per_token=1e-6))
    assert groups == [[3, 1, 5, 0, 2, 4]]  # overhead dominates: one pass, sorted, stable
    groups = optimal_groups(lengths, ForwardCost(per_forward=1e-9, per_token=1.0))
    assert groups == [[3], [1, 5], [0, 2, 4]]  # padding dominates: one pass per length
    assert optimal_groups([], DEFAULT_COST) == []
    assert optimal_groups([7] * 32, DEFAULT_COST) == [list(range(32))]


def test_the_bench_batch_splits_by_length_under_the_default_cost() -> None:
    """27 texts of 10-42 tokens (the serving bench's mix) do not run as one padded pass."""
    lengths = [10 + (i * 7) % 33 for i in range(27)]
    groups = optimal_groups(lengths, DEFAULT_COST)
    assert 1 < len(groups) < 8
    one = groups_cost(lengths, [list(range(27))], DEFAULT_COST)
    assert groups_cost(lengths, groups, DEFAULT_COST) < 0.9 * one


# -- the cost model fitted at load ----------------------------------------------------------


def test_fit_recovers_the_constants_of_exact_timings() -> None:
    true = ForwardCost(per_forward=0.015, per_token=3e-4, per_attention=2e-7)
    samples = [(n, length, true(n, length)) for n, length in calibration_shapes(512)]
    fit = fit_forward_cost(samples)
    assert fit is not None
    assert fit.per_forward == pytest.approx(true.per_forward, rel=1e-6)
    assert fit.per_token == pytest.approx(true.per_token, rel=1e-6)
    assert fit.per_attention == pytest.approx(true.per_attention, rel=1e-6)


def test_fit_never_goes_negative_and_gives_up_on_nonsense() -> None:
    # Long passes cheaper per token than the linear term predicts: no negative attention.
    samples = [(1, 8, 0.02), (1, 64, 0.04), (8, 16, 0.06), (8, 64, 0.17), (2, 256, 0.10)]
    fit = fit_forward_cost(samples)
    assert fit is not None
    assert min(fit.per_forward, fit.per_token, fit.per_attention) >= 0
    assert fit.per_token > 0
    # More tokens, less time: no usable per-token cost.
    assert fit_forward_cost([(1, 8, 0.3), (8, 64, 0.1), (32, 16, 0.05)]) is None
    assert fit_forward_cost([(1, 8, 0.01), (8, 64, 0.1)]) is None  # too few samples
    assert fit_forward_cost([(1, 8, 0.0), (8, 64, 0.1), (32, 16, 0.1)]) is None


def test_calibration_shapes_fit_the_model_context() -> None:
    assert max(length for _, length in calibration_shapes(512)) == 256
    shapes = calibration_shapes(32)
    assert max(length for _, length in shapes) == 32
    assert len(shapes) == len(set(shapes)) >= 3


def test_measure_keeps_the_fastest_round_and_respects_the_budget() -> None:
    now = [0.0]
    durations = iter([5.0, 1.0, 2.0, 3.0, 9.0, 9.0])  # round 1: 5, 1; round 2: 2, 3; ...

    def run(n: int, length: int) -> None:
        now[0] += next(durations)

    samples = measure(run, [(1, 8), (4, 8)], repeats=3, budget_s=100, clock=lambda: now[0])
    assert samples == [(1, 8, 2.0), (4, 8, 1.0)]
    calls = []

    def slow(n: int, length: int) -> None:
        calls.append((n, length))
        now[0] += 10

    now[0] = 0.0
    measure(slow, [(1, 8), (4, 8)], repeats=5, budget_s=15, clock=lambda: now[0])
    assert calls == [(1, 8), (4, 8)]  # one full round, then the budget was spent


# -- padded tensors ------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("which", ["classifier", "causal_lm"])
def test_padded_rows_equal_the_tokenizers_own_padding(
    which: str, side: str, tiny_classifier_dir: Path, tiny_causal_lm_dir: Path
) -> None:
    from transformers import AutoTokenizer

    from snowtrain.serve.models import pad_rows, padding_values

    path = tiny_classifier_dir if which == "classifier" else tiny_causal_lm_dir
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side=side)
    rng = random.Random(2)
    words = [
        "the",
        "movie",
        "was",
        "great",
        "terrible",
        "service",
        "an",
        "ordinary",
        "afternoon",
        "wonderful",
    ]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(20)]
    enc = tokenizer(texts, truncation=True, max_length=64)
    assert ("token_type_ids" in enc) == (which == "classifier")
    for rows in ([0], [3, 1], list(range(20)), rng.sample(range(20), 7)):
        ours = pad_rows(enc, rows, padding_values(tokenizer), tokenizer.padding_side)
        theirs = tokenizer.pad(
            {k: [v[i] for i in rows] for k, v in enc.items()}, return_tensors="pt"
        )
        assert set(ours) == set(theirs)
        for key, tensor in theirs.items():
            assert ours[key].dtype == tensor.dtype == torch.int64
            assert torch.equal(ours[key], tensor), key


# -- the classifier ------------------------------------------------------------------------


def load_classifier(model_dir: Path):
    from snowtrain.serve.model_dir import inspect_model_dir
    from snowtrain.serve.models import ClassifierModel
    from snowtrain.serve.runtime import choose_runtime

    model = ClassifierModel(inspect_model_dir(model_dir), choose_runtime("cpu", 1))
    model.load()
    return model


TEXTS = [
    "the movie was great",
    "terrible service " * 12,
    "an ordinary afternoon",
    "wonderful " * 40,
    "i will never come back to this awful place",
    "ok",
    "the weather is mild today with a few clouds and some rain later",
]


def test_answers_come_back_in_request_order_however_the_batch_is_split(
    tiny_classifier_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="snowtrain.serve.models"):
        model = load_classifier(tiny_classifier_dir)
    # Loading always calibrates; whether the timings fit depends on how busy the machine is
    # (fit_forward_cost refuses noisy ones, tested above), so either outcome is logged.
    assert (
        "length grouping cost model, measured" in caplog.text
        or "forward cost calibration unusable" in caplog.text
    )
    cost = model.forward_cost
    assert cost.per_token > 0 and cost.per_forward >= 0 and cost.per_attention >= 0
    alone = [model.predict([t])[0] for t in TEXTS]
    for forced in (
        ForwardCost(per_forward=1e-9, per_token=1.0),  # one pass per distinct length
        ForwardCost(per_forward=1e9, per_token=1e-9),  # everything in one pass
        cost,
    ):
        model.forward_cost = forced
        together = model.predict(TEXTS)
        for a, b in zip(alone, together, strict=True):
            assert a.label == b.label
            assert list(a.scores) == list(b.scores)
            for lab in a.scores:
                assert a.scores[lab] == pytest.approx(b.scores[lab], abs=1e-5)
