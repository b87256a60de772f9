"""Admission review logic (pure): the messages `kubectl apply` prints when it refuses."""

from __future__ import annotations

import copy

from snowtrain.operator.webhook import review


def ftj() -> dict:
    return {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"baseModel": {"uri": "/models/x"}, "data": {"table": "T"}},
    }


def test_valid_create_is_allowed() -> None:
    assert review("CREATE", ftj(), None) == []


def test_invalid_spec_names_the_field_and_reason() -> None:
    bad = ftj()
    bad["spec"]["training"] = {"learningRate": 5}
    bad["spec"]["data"]["query"] = "select 1"
    problems = review("CREATE", bad, None)
    assert any(p.startswith("spec.training.learningRate:") for p in problems)
    assert any(p.startswith("spec.data:") and "exactly one" in p for p in problems)


def test_training_edits_after_start_are_refused_but_serving_and_suspend_are_not() -> None:
    old = ftj()
    old["status"] = {"phase": "Running", "job": {"name": "s-a1", "attempts": 1}}
    new = copy.deepcopy(old)
    new["spec"]["training"] = {"learningRate": 0.001}
    assert review("UPDATE", new, old) == [
        "spec.training: cannot change after training started (only serving, suspend, "
        "activeDeadlineSeconds and backoffLimit can); create a new job instead"
    ]
    ok = copy.deepcopy(old)
    ok["spec"]["suspend"] = True
    ok["spec"]["serving"] = {"replicas": 2}
    assert review("UPDATE", ok, old) == []
    # Before anything started, the spec is still editable.
    pending = ftj()
    assert review("UPDATE", new | {"status": {}}, pending) == []
