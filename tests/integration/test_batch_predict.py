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
