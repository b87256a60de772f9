"""Following the trainer's progress lines: the bar, the loss curve and the summary."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from snowtrain.api.events import DoneEvent, ProgressEvent, build_event, parse_event
from snowtrain.cli.report import loss_history, plot_loss_curve, read_events, summary_table
from snowtrain.cli.trainer_process import ProgressView, format_eta

ev = build_event


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120, force_terminal=False, soft_wrap=True), buf


def test_parse_event_accepts_only_well_formed_events():
    assert parse_event('{"event":"progress","step":3}\n') == ProgressEvent(step=3)
    assert parse_event("INFO loading model\n") is None
    assert parse_event('{"step": 3}') is None  # no event field: log text
    assert parse_event('{"event": "progress"') is None  # truncated
    assert parse_event('{"event": "progress", "step": "x"}') is None  # not an event's shape
    assert parse_event('{"event": "unheard-of", "step": 3}') is None
    assert parse_event("[1, 2]") is None
    # A field a newer trainer adds does not make the line unreadable.
    assert parse_event('{"event":"progress","step":3,"newField":1}').step == 3


def test_the_trainer_cannot_emit_a_field_no_reader_declares():
    assert ev("progress", step=3, totalSteps=10).to_wire() == {
        "event": "progress",
        "step": 3,
        "totalSteps": 10,
    }
    with pytest.raises(ValueError, match="stepz"):
        ev("progress", step=3, stepz=4)
    with pytest.raises(ValueError, match=r"metrics\.trainLos"):
        ev("done", outcome="Succeeded", exitCode=0, metrics={"trainLos": 1.0})
    # NaN is not JSON: it goes out as null, never as an invalid line.
    line = ev("progress", step=1, loss=float("nan")).to_json()
    assert json.loads(line)["loss"] is None and parse_event(line) == ProgressEvent(step=1)


def test_format_eta():
    assert format_eta(None) == "-:--"
    assert format_eta(65.4) == "1:05"
    assert format_eta(3725) == "1:02:05"


def test_progress_view_follows_the_trainer():
    console, buf = _console()
    with ProgressView(console, "Training x") as view:
        view.handle(ev("start", totalSteps=100, resumedFromStep=40))
        view.handle(ev("data", rows=2700, validationRows=300, labels=["negative", "positive"]))
        view.handle(ev("progress", step=60, totalSteps=100, loss=0.51234, etaSeconds=30))
        view.handle(ev("eval", step=60, evalLoss=0.4, evalAccuracy=0.9))
        view.handle(ev("done", outcome="Succeeded", exitCode=0))
        task = view.progress.tasks[0]
        assert (task.completed, task.total) == (60, 100)
        assert task.fields["loss"] == "0.5123" and task.fields["eta"] == "0:30"
    out = buf.getvalue()
    assert "Resuming from the checkpoint at step 40" in out
    assert "2700 training rows, 300 validation rows, labels negative, positive" in out
    assert "Eval at step 60: loss 0.4000, accuracy 0.9000" in out
    assert view.done == DoneEvent(outcome="Succeeded", exit_code=0)


def test_loss_history_keeps_the_attempts_that_made_the_model():
    events = [
        ev("start", totalSteps=40),
        ev("progress", step=10, loss=2.0),
        ev("progress", step=20, loss=1.5),
        ev("progress", step=30, loss=1.4),  # after the last checkpoint: lost
        ev("start", totalSteps=40, resumedFromStep=20),
        ev("progress", step=30, loss=1.2),
        ev("eval", step=30, evalLoss=1.3),
    ]
    train, evals = loss_history(events)
    assert train == [(10, 2.0), (20, 1.5), (30, 1.2)]
    assert evals == [(30, 1.3)]
    # A fresh start (no resume) forgets earlier attempts.
    train, _ = loss_history([*events, ev("start", totalSteps=40)])
    assert train == []


def test_loss_curve_png_is_written(tmp_path):
    events_path = tmp_path / "events.jsonl"
    lines = [ev("start", totalSteps=19)] + [
        ev("progress", step=s, loss=2.0 / s) for s in range(1, 20)
    ]
    events_path.write_text("\n".join(e.to_json() for e in lines) + "\nnot json\n")
    assert len(read_events(events_path)) == 20
    out = plot_loss_curve(read_events(events_path), tmp_path / "model" / "loss_curve.png", "x")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss_curve([], tmp_path / "none.png", "x") is None


def test_summary_table_shows_metrics_time_and_model(tmp_path):
    console, buf = _console()
    console.print(
        summary_table(
            title="FineTuneJob x",
            outcome="Succeeded",
            metrics={
                "trainLoss": 0.25,
                "evalAccuracy": 0.912,
                "steps": 120,
                "perplexity": None,
                "mfu": 0.4231,
            },
            rows=2700,
            wall_seconds=93.2,
            model_dir=tmp_path / "model",
            loss_curve=tmp_path / "model" / "loss_curve.png",
        )
    )
    out = buf.getvalue()
    for text in ("Succeeded", "0.2500", "91.2%", "120", "2700", "93 s", "loss_curve.png", "42.3%"):
        assert text in out
    assert "perplexity" not in out


def test_demo_request_fits_the_model(tiny_classifier_dir, tiny_causal_lm_dir):
    from snowtrain.cli.serving import demo_request, model_task

    assert model_task(tiny_classifier_dir) == "classification"
    classify = demo_request("classification", "m")
    assert classify.path == "/v1/models/m:predict" and classify.body["instances"]
    complete = demo_request(model_task(tiny_causal_lm_dir), "m")
    assert complete.path == "/v1/completions" and complete.body["model"] == "m"
    assert (
        demo_request("pretrain", "m").body["prompt"]
        != demo_request("causal-lm", "m").body["prompt"]
    )
    # The printed curl is valid shell: the JSON body survives quoting.
    import shlex

    words = shlex.split(classify.curl("http://127.0.0.1:8080"))
    assert words[2] == "http://127.0.0.1:8080/v1/models/m:predict"
    assert json.loads(words[-1]) == classify.body
