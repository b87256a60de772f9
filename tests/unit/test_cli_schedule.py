"""``snowtrain run schedule.yaml --once`` without training: the command line, the state file's
bookkeeping (ticks, history, pruning), the gate's inputs, and that local mode builds the same
run the operator does without importing the operator's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from snowtrain.api.events import ChampionEvaluation, TrainerMetrics, TrainerSummary
from snowtrain.api.promotion import decide
from snowtrain.api.schedule import (
    HISTORY_RECORDS,
    RunRecord,
    ServedModel,
    TrainingScheduleStatus,
    run_manifest,
)
from snowtrain.api.validation import parse_job, parse_schedule
from snowtrain.cli import local_schedule as ls
from snowtrain.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
SCHEDULE = EXAMPLES / "training-schedule.yaml"
TICK = datetime(2026, 12, 6, 10, 0, 30, tzinfo=UTC)


def _schedule(**spec: Any) -> dict[str, Any]:
    body = yaml.safe_load(SCHEDULE.read_text())
    body["spec"].update(spec)
    return body


def _write(tmp_path: Path, body: dict[str, Any], name: str = "schedule.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


# --- the command line -------------------------------------------------------------------------


def test_a_schedule_without_once_says_to_run_one_tick(capsys):
    assert main(["run", str(SCHEDULE)]) == 2
    err = capsys.readouterr().err
    assert "TrainingSchedule sentiment-nightly runs on the operator's clock" in err
    assert "--once" in err and "Traceback" not in err


def test_once_is_for_schedules_only(capsys):
    assert main(["run", str(EXAMPLES / "finetune.yaml"), "--once"]) == 2
    err = capsys.readouterr().err
    assert "--once runs one tick of a TrainingSchedule" in err
    assert "is a FineTuneJob" in err


def test_a_bad_template_field_is_named_by_its_path_before_anything_runs(tmp_path, capsys):
    body = _schedule()
    body["spec"]["jobTemplate"]["spec"]["training"]["learningRate"] = -1
    out = tmp_path / "home"
    assert main(["run", str(_write(tmp_path, body)), "--once", "--output", str(out)]) == 2
    assert "spec.jobTemplate.spec.training.learningRate" in capsys.readouterr().err
    assert not out.exists()  # refused before any state was made


def test_validate_accepts_and_render_refuses_a_schedule(capsys):
    assert main(["validate", str(SCHEDULE)]) == 0
    assert "TrainingSchedule sentiment-nightly is valid" in capsys.readouterr().out
    assert main(["render", str(SCHEDULE)]) == 2
    assert "each tick creates a job from spec.jobTemplate" in capsys.readouterr().err


def test_local_mode_does_not_import_the_operators_dependencies():
    """The trainer image has neither kopf nor pydantic-settings: the tick must not need them."""
    code = (
        "import sys, snowtrain.cli.main, snowtrain.cli.local_schedule\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'pydantic_settings')"
        " or m.startswith('snowtrain.operator'))\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


# --- the run a tick creates -------------------------------------------------------------------


def test_local_mode_builds_the_operators_run_less_its_ownership():
    from snowtrain.operator import children as ch
    from snowtrain.operator import schedule_children as sch

    schedule = parse_schedule(_schedule())
    champion = "/runs/sentiment-nightly-1/model"
    local = run_manifest(schedule, TICK, champion_uri=champion, fingerprint="f", rows=3)
    cluster = sch.build_run(schedule, TICK, champion_uri=champion, fingerprint="f", rows=3)
    assert cluster.pop("metadata").pop("ownerReferences")
    assert cluster["spec"] == local["spec"] and cluster["kind"] == local["kind"]
    assert local["metadata"]["labels"] == {sch.LABEL_SCHEDULE: "sentiment-nightly"}
    assert ch.LABEL_MANAGED_BY not in local["metadata"]["labels"]
    assert local["spec"]["promotion"]["championUri"] == champion
    assert "serving" not in local["spec"]
    parse_job(local)  # a valid FineTuneJob, as local mode trains it


# --- the state file ---------------------------------------------------------------------------


def test_ticks_are_minutes_and_always_after_the_last_one():
    status = TrainingScheduleStatus()
    first = ls.next_tick(status, TICK)
    assert first == TICK.replace(second=0)
    status.last_schedule_time = "2026-12-06T10:00:00Z"
    # Another --once in the same minute gets the next minute: a run of its own.
    assert ls.next_tick(status, TICK) == first + timedelta(minutes=1)
    assert ls.next_tick(status, TICK + timedelta(hours=1)) == first + timedelta(hours=1)


def test_history_is_newest_first_capped_and_one_record_per_run():
    status = TrainingScheduleStatus()
    for i in range(HISTORY_RECORDS + 5):
        ls.record(status, RunRecord(scheduled_time=f"t{i:03d}", phase="Skipped"))
    assert len(status.history) == HISTORY_RECORDS
    assert status.history[0].scheduled_time == f"t{HISTORY_RECORDS + 4:03d}"
    ls.record(status, RunRecord(name="r-1", phase="Running"))
    ls.record(status, RunRecord(name="r-1", phase="Succeeded"))
    assert [r.phase for r in status.history if r.name == "r-1"] == ["Succeeded"]
    assert ls.interrupted_run(status) is None
    ls.record(status, RunRecord(name="r-2", phase="Running", reason=ls.INTERRUPTED))
    assert ls.interrupted_run(status).name == "r-2"


def test_state_round_trips_in_the_status_shape(tmp_path):
    schedule = parse_schedule(_schedule())
    status = TrainingScheduleStatus(
        in_service=ServedModel(run="s-2", model="/m/2"),
        previous=ServedModel(run="s-1", model="/m/1"),
        last_successful_run=RunRecord(name="s-2", data_fingerprint="abc"),
    )
    path = tmp_path / ls.STATE_FILE
    ls.save_state(path, schedule, status)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "TrainingSchedule" and doc["metadata"]["name"] == "sentiment-nightly"
    assert doc["status"]["inService"] == {"run": "s-2", "model": "/m/2"}
    loaded = ls.load_state(path)
    assert loaded == status
    assert ls.last_fingerprint(loaded) == ("s-2", "abc")
    assert ls.load_state(tmp_path / "missing.json") == TrainingScheduleStatus()


def test_an_unreadable_state_file_is_a_user_error(tmp_path):
    path = tmp_path / ls.STATE_FILE
    path.write_text("{not json")
    with pytest.raises(ls.UserError, match="not a schedule state file"):
        ls.load_state(path)


def test_pruning_keeps_the_limits_and_the_models_in_service():
    schedule = parse_schedule(_schedule(successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1))
    status = TrainingScheduleStatus(
        in_service=ServedModel(run="s-1"), previous=ServedModel(run="s-2")
    )
    runs = [
        ("s-1", "Succeeded"),
        ("s-2", "Succeeded"),
        ("s-3", "Succeeded"),
        ("s-4", "Failed"),
        ("s-5", "Succeeded"),
        ("s-6", "Failed"),
        ("s-7", "Succeeded"),
        ("s-8", None),  # unknown (no record, no termination message): kept
    ]
    assert ls.runs_to_prune(schedule, status, runs) == ["s-3", "s-4"]


def test_runs_on_disk_sort_by_tick_and_read_their_phase(tmp_path):
    for name, outcome in (("s-100", "Succeeded"), ("s-99", "Failed"), ("s-101", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / ls.RUN_MANIFEST).write_text("{}")
        if outcome:
            summary = TrainerSummary(outcome=outcome, exit_code=0 if outcome == "Succeeded" else 65)
            (tmp_path / name / "termination.json").write_text(summary.to_json())
    (tmp_path / "not-a-run").mkdir()
    assert ls.runs_on_disk(tmp_path) == ["s-99", "s-100", "s-101"]
    status = TrainingScheduleStatus(history=[RunRecord(name="s-101", phase="Running")])
    phases = [ls.run_phase(tmp_path, n, status) for n in ls.runs_on_disk(tmp_path)]
    assert phases == ["Failed", "Succeeded", "Running"]


# --- the gate ---------------------------------------------------------------------------------


def test_the_gate_reads_the_trainers_numbers_as_the_operator_does():
    body = _schedule()
    schedule = parse_schedule(body)
    run = parse_job(run_manifest(schedule, TICK, champion_uri="/m/1"))
    summary = TrainerSummary(
        outcome="Succeeded",
        exit_code=0,
        metrics=TrainerMetrics(eval_accuracy=0.85),
        champion=ChampionEvaluation(model="/m/1", metrics=TrainerMetrics(eval_accuracy=0.9)),
    )
    verdict = ls.gate_verdict(run, summary)
    assert verdict is not None
    assert (verdict.value, verdict.champion_value) == (0.85, 0.9)
    # The example allows one point of regression: 5 points worse is refused.
    assert verdict.promoted is False and verdict.reason == "GateFailed"
    assert verdict == decide(run.spec.promotion, {"evalAccuracy": 0.85}, {"evalAccuracy": 0.9})
    # A champion the trainer could not evaluate fails the gate closed, saying why.
    lost = summary.model_copy(update={"champion": ChampionEvaluation(problem="no such dir")})
    assert "no such dir" in (ls.gate_verdict(run, lost).message or "")
    del body["spec"]["jobTemplate"]["spec"]["promotion"]
    ungated = parse_job(run_manifest(parse_schedule(body), TICK, champion_uri="/m/1"))
    assert ls.gate_verdict(ungated, summary) is None
