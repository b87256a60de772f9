"""The API models: what a user's YAML turns into, and the errors they see when it is wrong."""

from __future__ import annotations

import copy

import pytest

from snowtrain.api import FineTuneJob, InvalidJob, PretrainJob, parse_job
from snowtrain.api.trainer_config import TrainerConfig, render_trainer_config
from snowtrain.api.validation import immutable_changes

FINETUNE = {
    "apiVersion": "snowtrain.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "sentiment", "namespace": "ml"},
    "spec": {
        "task": "classification",
        "baseModel": {"uri": "pvc://models/minilm"},
        "data": {
            "snowflake": {"secretRef": {"name": "sf"}, "warehouse": "TRAIN_WH"},
            "table": "ANALYTICS.PUBLIC.REVIEWS",
            "columns": {"text": "review_text", "label": "SENTIMENT"},
        },
        "training": {"epochs": 2, "learningRate": 5e-5, "batchSize": 32},
        "resources": {"gpusPerNode": 1, "memory": "16Gi", "queueName": "team-a"},
        "output": {"volumeClaimName": "models"},
        "serving": {"replicas": 2},
    },
}

PRETRAIN = {
    "apiVersion": "snowtrain.io/v1alpha1",
    "kind": "PretrainJob",
    "metadata": {"name": "tiny-llama"},
    "spec": {
        "architecture": {"family": "llama", "size": "tiny"},
        "tokenizer": {"vocabSize": 4096},
        "data": {"query": "SELECT body AS text FROM docs"},
    },
}


def with_spec(base: dict, **changes) -> dict:
    obj = copy.deepcopy(base)
    obj["spec"].update(changes)
    return obj


def errors_of(obj: dict) -> list[str]:
    with pytest.raises(InvalidJob) as exc:
        parse_job(obj)
    return [str(e) for e in exc.value.errors]


def test_valid_finetune_parses_with_defaults():
    job = parse_job(FINETUNE)
    assert isinstance(job, FineTuneJob)
    assert job.spec.training.learning_rate == 5e-5
    assert job.spec.training.gradient_accumulation_steps == 1
    assert job.spec.data.validation.fraction == 0.1
    assert job.spec.serving is not None and job.spec.serving.port == 8080
    assert job.to_wire()["spec"]["resources"]["queueName"] == "team-a"


def test_learning_rate_written_the_way_pyyaml_reads_it_is_accepted():
    # PyYAML (YAML 1.1) reads `5e-5` as a string; local mode must still accept it.
    obj = with_spec(FINETUNE, training={"learningRate": "5e-5"})
    assert parse_job(obj).spec.training.learning_rate == 5e-5


def test_valid_pretrain_parses():
    job = parse_job(PRETRAIN)
    assert isinstance(job, PretrainJob)
    assert job.task == "pretrain"
    assert job.spec.architecture.size == "tiny"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (with_spec(FINETUNE, training={"epochs": "three"}), "spec.training.epochs"),
        (with_spec(FINETUNE, training={"learningRate": 5}), "spec.training.learningRate"),
        (with_spec(FINETUNE, task="regression"), "spec.task: unsupported value 'regression'"),
        (
            with_spec(FINETUNE, baseModel={}),
            "spec.baseModel: set exactly one of uri or pretrainJobRef",
        ),
        (with_spec(FINETUNE, trainig={"epochs": 1}), "spec.trainig: unknown field"),
        (with_spec(FINETUNE, resources={"memory": "lots"}), "spec.resources.memory"),
        (with_spec(PRETRAIN, data={}), "spec.data: set exactly one of table or query"),
        (
            with_spec(FINETUNE, serving={"quantize": "int8", "resources": {"gpus": 1}}),
            "spec.serving: quantize int8 runs on CPU only",
        ),
        (with_spec(FINETUNE, serving={"quantize": "int4"}), "spec.serving.quantize"),
    ],
)
def test_invalid_specs_name_the_field(obj, expected):
    assert any(expected in e for e in errors_of(obj)), errors_of(obj)


def test_missing_required_field_is_named():
    obj = copy.deepcopy(FINETUNE)
    del obj["spec"]["baseModel"]
    assert "spec.baseModel: Field required" in errors_of(obj)


def test_unknown_kind_and_api_version():
    assert errors_of({**FINETUNE, "kind": "TrainJob"})[0].startswith(
        "kind: unknown kind 'TrainJob'"
    )
    assert errors_of({**FINETUNE, "apiVersion": "v1"})[0].startswith("apiVersion:")


@pytest.mark.parametrize(
    "table",
    ["T; DROP TABLE T", "REVIEWS--", 'T"; DROP TABLE X; --', "T /* x */", "A.B.C.D", "T)"],
)
def test_table_names_carrying_sql_are_refused(table):
    obj = copy.deepcopy(FINETUNE)
    obj["spec"]["data"]["table"] = table
    assert any(e.startswith("spec.data.table:") for e in errors_of(obj))


def test_semantic_rules():
    obj = copy.deepcopy(FINETUNE)
    obj["spec"]["training"]["lora"] = {"r": 8}
    obj["spec"]["data"]["columns"]["prompt"] = "P"
    errs = errors_of(obj)
    assert "spec.training.lora: LoRA is supported for task causal-lm only" in errs
    assert any(e.startswith("spec.data.columns.prompt: unknown column role") for e in errs)
    bad_heads = with_spec(PRETRAIN, architecture={"hiddenSize": 100, "numHeads": 3})
    assert any(e.startswith("spec.architecture.numHeads") for e in errors_of(bad_heads))


def test_trainer_config_is_rendered_without_secrets_and_roundtrips(tmp_path):
    job = parse_job(FINETUNE)
    cfg = render_trainer_config(
        job,
        output_dir="/mnt/models/out",
        checkpoint_dir="/mnt/models/out/.checkpoints",
        credentials_dir="/var/run/secrets/snowtrain/snowflake",
    )
    assert cfg.data.columns == {"text": "REVIEW_TEXT", "label": "SENTIMENT"}
    assert cfg.data.snowflake.warehouse == "TRAIN_WH"
    assert cfg.base_model == "pvc://models/minilm"
    text = cfg.dumps()
    assert "secretRef" not in text and "password" not in text.lower()
    path = tmp_path / "config.json"
    path.write_text(text)
    assert TrainerConfig.load(path) == cfg


def test_training_edits_after_start_are_refused_but_serving_edits_are_not():
    old = FINETUNE["spec"]
    new = copy.deepcopy(old)
    new["serving"]["replicas"] = 5
    new["suspend"] = True
    assert immutable_changes(old, new) == []
    new["training"]["learningRate"] = 1e-3
    assert [e.path for e in immutable_changes(old, new)] == ["spec.training"]
