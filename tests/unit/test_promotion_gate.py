"""The evaluation gate: its verdict, what the status says, and what the training pod gets."""

from __future__ import annotations

import json

import pytest

from snowtrain.api import parse_job
from snowtrain.api.promotion import PromotionSpec, decide
from snowtrain.api.validation import InvalidJob
from snowtrain.operator import attempts as at
from snowtrain.operator import children as ch
from snowtrain.operator import status as st

from .test_operator_children import NEW, SETTINGS, _pod, _trainer, ftj
from .test_operator_status import conds, k8s_job, observed, pod

CHAMPION = "pvc://models/finetunejob/ml/sentiment-29000000"


def test_higher_is_better_metrics_must_reach_the_threshold() -> None:
    spec = PromotionSpec(metric="evalAccuracy", threshold=0.8)
    assert decide(spec, {"evalAccuracy": 0.8}).promoted
    below = decide(spec, {"evalAccuracy": 0.79})
    assert (below.promoted, below.reason) == (False, "GateFailed")
    assert "0.79" in below.message and "at least 0.8" in below.message


def test_lower_is_better_metrics_must_stay_under_the_threshold() -> None:
    spec = PromotionSpec(metric="perplexity", threshold=20.0)
    assert decide(spec, {"perplexity": 19.5}).promoted
    assert not decide(spec, {"perplexity": 20.5}).promoted


def test_no_worse_than_the_champion_by_more_than_max_regression() -> None:
    spec = PromotionSpec(metric="evalAccuracy", max_regression=0.02, champion_uri=CHAMPION)
    ok = decide(spec, {"evalAccuracy": 0.89}, {"evalAccuracy": 0.9})
    assert ok.promoted and ok.champion_value == 0.9
    worse = decide(spec, {"evalAccuracy": 0.85}, {"evalAccuracy": 0.9})
    assert not worse.promoted
    assert "0.85" in worse.message and "0.9" in worse.message  # both numbers, in words
    loss = PromotionSpec(metric="evalLoss", max_regression=0.0, champion_uri=CHAMPION)
    assert decide(loss, {"evalLoss": 0.40}, {"evalLoss": 0.41}).promoted
    assert not decide(loss, {"evalLoss": 0.42}, {"evalLoss": 0.41}).promoted


def test_a_gate_never_passes_unmeasured() -> None:
    spec = PromotionSpec(
        metric="evalAccuracy", threshold=0.5, max_regression=0.1, champion_uri=CHAMPION
    )
    none = decide(spec, {"evalLoss": 0.3})
    assert (none.promoted, none.reason) == (False, "NotEvaluated")
    lost = decide(spec, {"evalAccuracy": 0.9}, None, "the champion's tokenizer differs")
    assert not lost.promoted and "tokenizer differs" in lost.message


def test_a_champion_without_max_regression_is_reported_not_compared() -> None:
    spec = PromotionSpec(metric="evalAccuracy", threshold=0.5, champion_uri=CHAMPION)
    out = decide(spec, {"evalAccuracy": 0.6}, {"evalAccuracy": 0.9})
    assert out.promoted and out.champion_value == 0.9


def test_the_metric_must_be_one_the_task_evaluates() -> None:
    with pytest.raises(InvalidJob, match=r"spec.promotion.metric.*perplexity"):
        parse_job(ftj(promotion={"metric": "perplexity", "threshold": 10}))
    with pytest.raises(InvalidJob, match=r"spec\.promotion\.maxRegression"):
        parse_job(ftj(promotion={"metric": "evalLoss", "maxRegression": -1}))


def _succeeded(metrics: dict, champion: dict | None = None) -> at.AttemptState:
    summary = {"outcome": "Succeeded", "exitCode": 0, "metrics": metrics}
    if champion is not None:
        summary["champion"] = champion
    done = pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": json.dumps(summary)})  # fmt: skip
    return at.observe_attempt(k8s_job(("Complete", "")), [done])


SERVING = dict(serving_wanted=True, serving_replicas=1, serving_names=("j-serve", "j-serve"),
               endpoint="http://j-serve.ns.svc:8080")  # fmt: skip


def test_a_run_below_the_bar_succeeds_but_is_not_served() -> None:
    gate = PromotionSpec(metric="evalAccuracy", max_regression=0.01, champion_uri=CHAMPION)
    state = _succeeded({"evalAccuracy": 0.7}, {"model": CHAMPION, "metrics": {"evalAccuracy": 0.9}})
    out = st.compute(observed(state, promotion=gate, **SERVING))
    status = out.status
    assert status["phase"] == "Succeeded"
    assert not out.deploy_serving
    c = conds(status)
    assert (c["Promoted"]["status"], c["Promoted"]["reason"]) == ("False", "GateFailed")
    assert "0.7" in c["Promoted"]["message"] and "0.9" in c["Promoted"]["message"]
    assert (c["ServingReady"]["status"], c["ServingReady"]["reason"]) == ("False", "GateFailed")
    assert c["Ready"]["status"] == "True"  # decided: nothing more will happen
    assert status["promotion"]["value"] == 0.7 and status["promotion"]["championValue"] == 0.9
    # Later, the Job (and its termination message) gone: the verdict stays.
    later = st.compute(
        observed(at.AttemptState("gone"), old_status=status, promotion=gate, **SERVING)
    )
    assert later.status["promotion"] == status["promotion"] and not later.deploy_serving


def test_a_run_that_clears_the_bar_is_served() -> None:
    gate = PromotionSpec(metric="evalAccuracy", threshold=0.6)
    out = st.compute(observed(_succeeded({"evalAccuracy": 0.7}), promotion=gate, **SERVING))
    assert out.deploy_serving
    assert conds(out.status)["Promoted"]["status"] == "True"
    assert out.status["promotion"]["reason"] == "GatePassed"


def test_the_champion_is_mounted_read_only_and_named_in_the_trainer_config() -> None:
    gate = {"metric": "evalAccuracy", "maxRegression": 0.01}
    same_claim = parse_job(ftj(promotion={**gate, "championUri": CHAMPION}))
    manifest = ch.build_training_job(same_claim, SETTINGS, 1, NEW)
    claims = [v["persistentVolumeClaim"]["claimName"] for v in _pod(manifest)["volumes"] if "persistentVolumeClaim" in v]  # fmt: skip
    assert sorted(claims) == ["base-models", "models"]  # the output claim, reused
    (mount,) = [
        m for m in _trainer(manifest)["volumeMounts"] if m["mountPath"] == ch.CHAMPION_MOUNT
    ]
    assert mount == {"name": "models", "mountPath": ch.CHAMPION_MOUNT, "readOnly": True}
    config = json.loads(ch.build_config_map(same_claim, SETTINGS)["data"]["config.json"])
    assert config["champion"] == {
        "path": f"{ch.CHAMPION_MOUNT}/finetunejob/ml/sentiment-29000000",
        "uri": CHAMPION,
    }
    other = parse_job(ftj(promotion={**gate, "championUri": "pvc://archive/m"}))
    volumes = _pod(ch.build_training_job(other, SETTINGS, 1, NEW))["volumes"]
    assert {
        "name": "champion",
        "persistentVolumeClaim": {"claimName": "archive", "readOnly": True},
    } in volumes
