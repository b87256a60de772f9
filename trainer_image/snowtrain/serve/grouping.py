"""Split a classifier batch into padded forward passes of least estimated cost.

A batch of texts of different lengths runs as one or more forward passes, each padded to its
longest text. One pass wastes compute on padding (a 10-token text padded to 50 tokens costs
5x its share); many passes each pay a fixed overhead (Python, kernel launches, small and
inefficient matrix products). The cost of a pass of n texts padded to L tokens is modelled as

    per_forward + n * L * per_token + n * L**2 * per_attention

(the linear layers scale with tokens, attention scores with tokens x length), and
`optimal_groups` finds the partition of least total cost exactly.

The constants depend on the model, the device and quantization, so the classifier measures
them once at load (`fit_forward_cost` over a few timed forwards of different shapes) instead
of trusting numbers from another machine. `DEFAULT_COST` is the fallback when that fit is
unusable: the shape measured for a small encoder (MiniLM-L6) on a few CPU threads, where a
forward's fixed cost is worth some tens of tokens and attention is negligible below a few
hundred tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ForwardCost:
    """Estimated seconds of one forward pass: see the module docstring."""

    per_forward: float
    per_token: float
    per_attention: float = 0.0

    def __call__(self, n: int, length: int) -> float:
        return self.per_forward + n * length * (self.per_token + length * self.per_attention)

    def describe(self) -> str:
        tokens = self.per_forward / self.per_token if self.per_token > 0 else float("inf")
        return (
            f"{self.per_forward * 1e3:.2f} ms per forward + {self.per_token * 1e6:.1f} µs per "
            f"token + {self.per_attention * 1e9:.1f} ns per token x length "
            f"(a forward costs as much as {tokens:.0f} padding tokens)"
        )


MAX_FIT_ERROR = 0.25
"""Largest RMS relative error of an accepted fit; MiniLM and the test BERT fit within 0.12."""

DEFAULT_COST = ForwardCost(per_forward=14e-3, per_token=0.3e-3, per_attention=0.0)


def optimal_groups(lengths: Sequence[int], cost: ForwardCost) -> list[list[int]]:
    """Partition batch indices into forward passes of least total `cost`, longest first.

    Exact: some optimal partition is contiguous in length order (give the pass with the
    longest padding the longest texts, the next one the next longest, and no pass's padded
    length grows), so a dynamic program over the sorted lengths finds it in O(n^2). Each
    group lists indices longest first; ties keep request order, and on equal cost the fewer,
    larger passes win.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of the j longest texts
    cut = [0] * (n + 1)  # best[j]'s last group is order[cut[j]:j]
    for j in range(1, n + 1):
        for i in range(j):  # group order[i:j], padded to its longest, lengths[order[i]]
            c = best[i] + cost(j - i, lengths[order[i]])
            if c < best[j]:
                best[j], cut[j] = c, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def groups_cost(
    lengths: Sequence[int], groups: Sequence[Sequence[int]], cost: ForwardCost
) -> float:
    """Total estimated cost of running `groups` (lists of indices into `lengths`)."""
    return sum(cost(len(g), max(lengths[i] for i in g)) for g in groups)


def fit_forward_cost(samples: Sequence[tuple[int, int, float]]) -> ForwardCost | None:
    """Least-squares fit of the cost model to measured (n, length, seconds), or None.

    Relative errors are minimised, so millisecond forwards weigh as much as slow ones (the
    per-forward constant shows in the small ones). Every coefficient must be >= 0: terms are
    dropped (all subsets tried) until the fit is non-negative, and the per-token term must
    stay; a fit that misses the measurements by more than `MAX_FIT_ERROR` (root mean square,
    relative) is refused too: then the timings were too noisy to use (a busy machine) and
    the caller keeps a default.
    """
    if len(samples) < 3:
        return None
    x = np.array([[1.0, n * length, n * length * length] for n, length, _ in samples])
    t = np.array([s for _, _, s in samples], dtype=float)
    if not np.all(t > 0):
        return None
    best: tuple[float, np.ndarray] | None = None
    for k in (3, 2, 1):
        for cols in itertools.combinations(range(3), k):
            if 1 not in cols:
                continue
            a = x[:, cols] / t[:, None]
            coef, *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
            if np.any(coef < 0):
                continue
            resid = float(np.sum((a @ coef - 1.0) ** 2))
            if best is None or resid < best[0]:
                full = np.zeros(3)
                full[list(cols)] = coef
                best = (resid, full)
    if best is None or best[1][1] <= 0 or best[0] / len(t) > MAX_FIT_ERROR**2:
        return None
    c, a, b = (float(v) for v in best[1])
    return ForwardCost(per_forward=c, per_token=a, per_attention=b)


def calibration_shapes(max_length: int) -> list[tuple[int, int]]:
    """(n, length) forwards to time: small and large batches of short texts, and long texts.

    Chosen to span the trade-off the grouping makes (one pass vs several, 8-64 tokens,
    1-32 texts) plus one long pass to see the attention term; about 1,500 tokens in all.
    """
    shapes = [(1, 8), (1, 64), (8, 16), (8, 64), (32, 16), (2, 256)]
    out: list[tuple[int, int]] = []
    for n, length in shapes:
        shape = (n, max(2, min(length, max_length)))
        if shape not in out:
            out.append(shape)
    return out


def measure(
    run: Callable[[int, int], object],
    shapes: Sequence[tuple[int, int]],
    *,
    repeats: int = 3,
    budget_s: float = 3.0,
    clock: Callable[[], float] | None = None,
) -> list[tuple[int, int, float]]:
    """Time `run(n, length)` per shape: the fastest of `repeats` rounds (a shared machine's
    hiccups only ever add time), stopping after the first full round once `budget_s` is spent."""
    import time

    clock = clock or time.perf_counter
    fastest = [float("inf")] * len(shapes)
    start = clock()
    for r in range(repeats):
        if r > 0 and clock() - start > budget_s:
            break
        for k, (n, length) in enumerate(shapes):
            t0 = clock()
            run(n, length)
            fastest[k] = min(fastest[k], clock() - t0)
    return [(n, length, s) for (n, length), s in zip(shapes, fastest, strict=True)]
