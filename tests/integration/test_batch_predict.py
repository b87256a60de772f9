"""The batch predictor (``python -m snowtrain.predict``) against the Snowflake emulator, run
as the pod runs it: every input row answered exactly once in the output table, whatever
kills the pod, in each write mode; bad input refused with the field and the reason."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.models import build_tiny_classifier
from tests.integration.trainer_run import (
    TrainerRun,
    finish,
    sentiment_table,
    start_trainer,
    trainer_env,
    wait_for_event,
)

PREDICT = "snowtrain.predict"


def predictor_config(tmp: Path, model_dir: Path, **fields: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "score-reviews",
        "namespace": "default",
        "runId": "default/score-reviews/uid-1",
        "modelDir": str(model_dir),
        "modelName": "tiny-classifier",
        "input": {
            "snowflake": {"loginTimeoutSeconds": 10, "networkTimeoutSeconds": 60, "retries": 1},
            "table": "REVIEWS",
            "keyColumns": ["ID"],
            "textColumn": "TEXT",
            "batchRows": 256,
        },
        "output": {"table": "REVIEWS_SCORED", "mode": "append", "commitRows": 200},
        "batchSize": 32,
        "progress": {"intervalSeconds": 0},
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def predict(config: dict[str, Any], db: Any, tmp: Path) -> TrainerRun:
    return finish(start_trainer(config, trainer_env(db, tmp), tmp, module=PREDICT), tmp)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("classifier"))


def _output(db: Any, table: str = "REVIEWS_SCORED") -> list[tuple]:
    return db.execute(
        f'SELECT "ID", "LABEL", "SCORE", "SCORES", "MODEL", "RUN_ID", "PREDICTED_AT" FROM {table} '
        'ORDER BY "ID"'
    )


def test_every_row_answered_once_with_the_models_labels(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    data = sentiment_table(900)
    snowflake_db.seed_table("REVIEWS", data)
    run = predict(predictor_config(tmp_path, classifier_dir), snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = _output(snowflake_db)
    assert [r[0] for r in rows] == list(range(900))
    from snowtrain.serve.model_dir import inspect_model_dir
    from snowtrain.serve.models import ClassifierModel
    from snowtrain.serve.runtime import choose_runtime

    model = ClassifierModel(inspect_model_dir(classifier_dir), choose_runtime())
    model.load()
    texts = data.column("TEXT").to_pylist()
    sample = list(range(0, 900, 37))
    expected = model.predict([texts[i] for i in sample])
    for i, want in zip(sample, expected, strict=True):
        _id, label, score, scores, model_name, run_id, at = rows[i]
        assert label == want.label
        assert score == pytest.approx(want.scores[want.label], abs=1e-4)
        got = json.loads(scores)
        assert set(got) == set(want.scores)
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-4)
        assert (model_name, run_id) == ("tiny-classifier", "default/score-reviews/uid-1")
        assert at is not None
    done = run.termination["predictions"]
    assert done["rowsTotal"] == done["rowsDone"] == 900
    assert run.of("rows")[-1]["rowsDone"] == 900
    # Nothing of the run is left behind.
    staging = snowflake_db.execute(
        "SELECT COUNT(*) FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME LIKE 'SNOWTRAIN_STAGING_%'"
    )
    assert staging[0][0] == 0


def test_a_killed_pod_is_resumed_without_duplicates_or_gaps(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    snowflake_db.seed_table("REVIEWS", sentiment_table(1500))
    config = predictor_config(tmp_path, classifier_dir)
    env = trainer_env(snowflake_db, tmp_path)
    proc = start_trainer(config, env, tmp_path, module=PREDICT)
    try:
        wait_for_event(proc, "rows", rowsDone=400)  # two chunks committed, more to go
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The output table has not changed: the run writes it once, at the end.
    assert snowflake_db.execute("SELECT COUNT(*) FROM REVIEWS_SCORED")[0][0] == 0
    run = predict(config, snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    first = run.of("rows")[0]
    assert 400 <= first["resumedFromRow"] < 1500
    ids = [r[0] for r in snowflake_db.execute('SELECT "ID" FROM REVIEWS_SCORED ORDER BY "ID"')]
    assert ids == list(range(1500))


def test_upsert_updates_matching_keys_and_overwrite_replaces_the_table(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    snowflake_db.seed_table("REVIEWS", sentiment_table(300))
    first = predict(predictor_config(tmp_path, classifier_dir), snowflake_db, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # New rows past the old keys, and a changed text for an old key.
    snowflake_db.execute(
        "INSERT INTO REVIEWS (ID, TEXT, LABEL) VALUES (1000, 'great tasty food', 'positive')"
    )
    upsert = predictor_config(tmp_path, classifier_dir, runId="run-2", output={"mode": "upsert"})
    run = predict(upsert, snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = snowflake_db.execute('SELECT "ID", "RUN_ID" FROM REVIEWS_SCORED ORDER BY "ID"')
    assert [r[0] for r in rows] == [*range(300), 1000]  # each key once
    assert {r[1] for r in rows} == {"run-2"}  # every matching row updated by the new run
    snowflake_db.execute('DELETE FROM REVIEWS WHERE "ID" >= 100')
    overwrite = predictor_config(
        tmp_path, classifier_dir, runId="run-3", output={"mode": "overwrite"}
    )
    run = predict(overwrite, snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = snowflake_db.execute('SELECT "ID", "RUN_ID" FROM REVIEWS_SCORED ORDER BY "ID"')
    assert rows == [(i, "run-3") for i in range(100)]


def test_a_run_that_already_wrote_its_rows_does_not_write_them_again(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    # The pod died after the output write and before it exited: its retry must find the
    # run's rows and stop, not append them a second time.
    snowflake_db.seed_table("REVIEWS", sentiment_table(120))
    config = predictor_config(tmp_path, classifier_dir)
    assert predict(config, snowflake_db, tmp_path).returncode == 0
    again = predict(config, snowflake_db, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already in REVIEWS_SCORED" in again.stderr
    assert snowflake_db.execute("SELECT COUNT(*) FROM REVIEWS_SCORED")[0][0] == 120


def test_input_changed_under_a_resumed_run_starts_over(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    snowflake_db.seed_table("REVIEWS", sentiment_table(1200))
    config = predictor_config(tmp_path, classifier_dir)
    proc = start_trainer(config, trainer_env(snowflake_db, tmp_path), tmp_path, module=PREDICT)
    try:
        wait_for_event(proc, "rows", rowsDone=400)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Rows before the committed boundary disappear: positions now mean other rows.
    snowflake_db.execute('DELETE FROM REVIEWS WHERE "ID" < 50')
    run = predict(config, snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "the input changed" in run.stderr
    assert run.of("rows")[0]["resumedFromRow"] == 0
    ids = [r[0] for r in snowflake_db.execute('SELECT "ID" FROM REVIEWS_SCORED ORDER BY "ID"')]
    assert ids == list(range(50, 1200))


def test_null_texts_get_null_answers_and_do_not_fail_the_run(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    import pyarrow as pa

    snowflake_db.seed_table(
        "REVIEWS", pa.table({"ID": [1, 2, 3], "TEXT": ["great food", None, "rude staff"]})
    )
    run = predict(predictor_config(tmp_path, classifier_dir), snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = snowflake_db.execute('SELECT "ID", "LABEL", "SCORES" FROM REVIEWS_SCORED ORDER BY "ID"')
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[1][1:] == (None, None)
    assert rows[0][1] is not None and rows[2][1] is not None


@pytest.mark.parametrize(
    ("rows", "field", "reason"),
    [
        ([(1, "a"), (1, "b"), (2, "c")], "input.keyColumns", "shared by 2 rows"),
        ([(1, "a"), (None, "b")], "input.keyColumns", "NULL key"),
    ],
)
def test_keys_that_cannot_resume_are_refused_before_the_model_loads(
    snowflake_db: Any,
    classifier_dir: Path,
    tmp_path: Path,
    rows: list[tuple],
    field: str,
    reason: str,
) -> None:
    import pyarrow as pa

    ids, texts = zip(*rows, strict=True)
    snowflake_db.seed_table(
        "REVIEWS", pa.table({"ID": pa.array(ids, pa.int64()), "TEXT": list(texts)})
    )
    run = predict(predictor_config(tmp_path, classifier_dir), snowflake_db, tmp_path)
    assert run.returncode == 65  # DataError
    assert run.termination["reason"] == "DataError"
    assert field in run.termination["message"] and reason in run.termination["message"]
    assert not snowflake_db.table_exists("REVIEWS_SCORED")


def test_an_output_table_without_the_runs_columns_is_refused_naming_them(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    snowflake_db.seed_table("REVIEWS", sentiment_table(50))
    snowflake_db.execute("CREATE TABLE REVIEWS_SCORED (ID NUMBER, VERDICT VARCHAR)")
    run = predict(predictor_config(tmp_path, classifier_dir), snowflake_db, tmp_path)
    assert run.returncode == 64, run.stderr[-2000:]
    message = run.termination["message"]
    assert "output.table REVIEWS_SCORED" in message and "LABEL" in message


def test_a_language_model_writes_the_completions_greedy_generation_gives(
    snowflake_db: Any, tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    import pyarrow as pa

    prompts = [f"the cat number {i} sat on" for i in range(12)]
    snowflake_db.seed_table("PROMPTS", pa.table({"ID": list(range(12)), "PROMPT": prompts}))
    config = predictor_config(
        tmp_path,
        tiny_causal_lm_dir,
        input={"table": "PROMPTS", "textColumn": "PROMPT"},
        output={"table": "COMPLETIONS"},
        generation={"maxTokens": 6},
        batchSize=5,
    )
    run = predict(config, snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = snowflake_db.execute(
        'SELECT "ID", "COMPLETION", "FINISH_REASON" FROM COMPLETIONS ORDER BY "ID"'
    )
    from snowtrain.serve.generation import CompletionItem
    from snowtrain.serve.model_dir import inspect_model_dir
    from snowtrain.serve.models import CompletionModel
    from snowtrain.serve.runtime import choose_runtime

    model = CompletionModel(inspect_model_dir(tiny_causal_lm_dir), choose_runtime())
    model.load()
    for (i, text, reason), prompt in zip(rows, prompts, strict=True):
        (want,) = model.predict([CompletionItem(prompt, max_tokens=6, temperature=0)])
        assert (text, reason) == (want.text, want.finish_reason), i


def test_sigterm_mid_run_exits_preempted_and_the_next_pod_goes_on(
    snowflake_db: Any, classifier_dir: Path, tmp_path: Path
) -> None:
    snowflake_db.seed_table("REVIEWS", sentiment_table(1500))
    config = predictor_config(tmp_path, classifier_dir)
    proc = start_trainer(config, trainer_env(snowflake_db, tmp_path), tmp_path, module=PREDICT)
    wait_for_event(proc, "rows", rowsDone=400)
    proc.send_signal(signal.SIGTERM)  # what the kubelet sends a preempted pod
    stopped = finish(proc, tmp_path)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    assert stopped.termination["reason"] == "Preempted"
    assert 400 <= stopped.termination["predictions"]["rowsDone"] < 1500
    run = predict(config, snowflake_db, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.termination["predictions"]["resumedFromRow"] >= 400
    ids = [r[0] for r in snowflake_db.execute('SELECT "ID" FROM REVIEWS_SCORED ORDER BY "ID"')]
    assert ids == list(range(1500))


def test_a_stop_between_batches_is_not_mistaken_for_a_bad_row(classifier_dir: Path) -> None:
    """The classifier retries a failed batch row by row to find a bad text; a stop request
    must go through that, not be retried away (a preempted pod would run on)."""
    from snowtrain.api.batch import GenerationSettings
    from snowtrain.predict.infer import Predictor
    from snowtrain.trainer.errors import Preempted

    predictor = Predictor(str(classifier_dir), batch_size=4, generation=GenerationSettings())
    calls = iter(range(100))

    def stop_at_the_third_batch() -> None:
        if next(calls) == 2:
            raise Preempted("SIGTERM")

    with pytest.raises(Preempted):
        predictor.predict(["great food"] * 20, 0, stop_at_the_third_batch)
    model = predictor.model

    def preempted_inside(texts: list[str]) -> list[Any]:
        raise Preempted("SIGTERM")

    model.predict = preempted_inside  # type: ignore[method-assign]
    with pytest.raises(Preempted):
        predictor.predict(["great food"] * 3, 0)
    assert predictor.failed_rows == 0
