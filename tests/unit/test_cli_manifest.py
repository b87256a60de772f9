"""The CLI validates YAML exactly as the cluster would and reports bad fields by path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snowtrain.api import FineTuneJob, PretrainJob, parse_job
from snowtrain.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"


def _example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def _write(tmp_path: Path, obj: object, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return path


def test_examples_are_valid_jobs():
    finetune = parse_job(_example("finetune.yaml"))
    pretrain = parse_job(_example("pretrain.yaml"))
    assert isinstance(finetune, FineTuneJob) and finetune.task == "classification"
    assert finetune.spec.data.table == "SENTIMENT"
    assert finetune.spec.serving and finetune.spec.serving.enabled
    assert finetune.spec.data.snowflake.secret_ref.name == "snowflake-credentials"
    assert finetune.spec.output.volume_claim_name
    assert isinstance(pretrain, PretrainJob) and pretrain.spec.architecture.family == "llama"
    assert pretrain.spec.data.table == "CORPUS"


def test_secret_example_holds_only_placeholders():
    secret = _example("snowflake-secret.yaml")
    assert secret["kind"] == "Secret"
    assert (
        secret["metadata"]["name"]
        == _example("finetune.yaml")["spec"]["data"]["snowflake"]["secretRef"]["name"]
    )
    assert all(v.startswith("<") for v in secret["stringData"].values())


def test_validate_accepts_the_examples(capsys):
    assert main(["validate", str(EXAMPLES / "finetune.yaml"), str(EXAMPLES / "pretrain.yaml")]) == 0
    out = capsys.readouterr().out
    assert "FineTuneJob sentiment-minilm is valid" in out
    assert "PretrainJob corpus-llama-small is valid" in out


def _bad_cases() -> dict[str, tuple[dict, str]]:
    unknown_kind = _example("finetune.yaml") | {"kind": "FineTuneJobs"}
    bad_field = _example("finetune.yaml")
    bad_field["spec"]["training"]["learningRate"] = -1
    bad_field["spec"]["training"]["batchSzie"] = 8
    no_source = _example("finetune.yaml")
    del no_source["spec"]["data"]["table"]
    bad_table = _example("finetune.yaml")
    bad_table["spec"]["data"]["table"] = "SENTIMENT; DROP TABLE X"
    return {
        "unknown kind": (unknown_kind, "kind: unknown kind 'FineTuneJobs'"),
        "invalid field": (bad_field, "spec.training.learningRate"),
        "misspelled field": (bad_field, "spec.training.batchSzie: unknown field"),
        "missing data source": (no_source, "spec.data: set exactly one of table or query"),
        "unsafe table name": (bad_table, "spec.data.table"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
@pytest.mark.parametrize("command", ["validate", "run", "render"])
def test_bad_yaml_names_the_field_and_exits_2(tmp_path, capsys, case, command):
    obj, expected = _bad_cases()[case]
    path = _write(tmp_path, obj)
    code = main(
        [command, str(path)] + (["--output", str(tmp_path / "run")] if command == "run" else [])
    )
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert str(path) in err
    # Nothing was started or written for an invalid job.
    assert not (tmp_path / "run").exists()


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    obj, _ = _bad_cases()["invalid field"]
    assert main(["validate", str(_write(tmp_path, obj))]) == 2
    err = capsys.readouterr().err
    assert "learningRate" in err and "batchSzie" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: [unclosed", "line 1"),
        ("", "the file is empty"),
        ("- just\n- a list\n", "a resource must be a YAML mapping"),
    ],
)
def test_unreadable_yaml_is_a_user_error(tmp_path, capsys, text, expected):
    assert main(["validate", str(_write(tmp_path, text))]) == 2
    assert expected in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_run_needs_a_name_and_a_single_document(tmp_path, capsys):
    nameless = _example("finetune.yaml")
    del nameless["metadata"]["name"]
    assert main(["render", str(_write(tmp_path, nameless))]) == 2
    assert "metadata.name: field required" in capsys.readouterr().err
    two = (
        (EXAMPLES / "finetune.yaml").read_text()
        + "\n---\n"
        + (EXAMPLES / "pretrain.yaml").read_text()
    )
    path = _write(tmp_path, two, "two.yaml")
    assert main(["run", str(path)]) == 2
    assert "holds 2 documents" in capsys.readouterr().err
    # validate takes multi-document files.
    assert main(["validate", str(path)]) == 0


def test_console_script_prints_no_traceback(tmp_path):
    """The installed entry point, as a user runs it: message on stderr, exit 2, no traceback."""
    obj, _ = _bad_cases()["missing data source"]
    proc = subprocess.run(
        [sys.executable, "-m", "snowtrain.cli", "run", str(_write(tmp_path, obj))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "spec.data" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_render_prints_the_operator_config(capsys, tmp_path):
    assert (
        main(
            [
                "render",
                str(EXAMPLES / "finetune.yaml"),
                "--output",
                str(tmp_path),
                "--max-steps",
                "7",
            ]
        )
        == 0
    )
    config = json.loads(capsys.readouterr().out)
    assert config["kind"] == "FineTuneJob" and config["task"] == "classification"
    assert config["training"]["maxSteps"] == 7
    assert config["output"]["dir"] == str(tmp_path / "model")
    assert config["data"]["columns"] == {"text": "TEXT", "label": "LABEL"}


def test_crds_command_matches_checked_in_crds(tmp_path, capsys):
    assert main(["crds", "--out", str(tmp_path)]) == 0
    for path in (ROOT / "manifests" / "crds").glob("*.yaml"):
        assert (tmp_path / path.name).read_text() == path.read_text()
    capsys.readouterr()
    assert main(["crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert {d["spec"]["names"]["kind"] for d in docs} == {
        "FineTuneJob",
        "PretrainJob",
        "BatchPrediction",
        "TrainingSchedule",
    }
