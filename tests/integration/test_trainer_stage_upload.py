"""The trainer uploads its exported model to a Snowflake internal stage (output.stage)."""

from __future__ import annotations

import hashlib

import pytest

from tests.integration.trainer_run import (
    run_trainer,
    sentiment_config,
    sentiment_table,
    tiny_bert_dir,
    trainer_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.snowflake]


def test_trainer_puts_the_exported_model_on_the_stage(snowflake_db, tmp_path):
    snowflake_db.seed_table("REVIEWS", sentiment_table(30))
    snowflake_db.execute("CREATE STAGE MODELS")
    config = sentiment_config(
        snowflake_db,
        tmp_path,
        tiny_bert_dir(tmp_path / "base"),
        training={"maxSteps": 2, "batchSize": 8, "maxSeqLength": 16},
    )
    config["output"]["stage"] = "@MODELS/jobs/sentiment"
    run = run_trainer(config, trainer_env(snowflake_db, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    model = tmp_path / "model"
    exported = {
        p.relative_to(model).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in model.rglob("*")
        if p.is_file()
    }
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "label_map.json",
        "metrics.json",
        "snowtrain.json",
    } <= set(exported)
    # LIST names the stage in lower case; the emulator stores the bytes as sent (md5).
    listed = {
        name.removeprefix("models/jobs/sentiment/"): md5
        for name, _size, md5, _modified in snowflake_db.execute("LIST @MODELS")
    }
    assert listed == exported
    assert f"uploaded {len(exported)} file(s) to @MODELS/jobs/sentiment" in run.stderr

    # The summary (from there, status.model of the resource) names the local export and
    # the stage the model was put on.
    term = run.termination
    assert term["outcome"] == "Succeeded" and term["model"]["uri"] == str(model)
    assert term["model"]["stage"] == "@MODELS/jobs/sentiment"
    assert run.of("done")[-1]["model"] == term["model"]
