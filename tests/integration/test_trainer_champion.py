"""The evaluation gate's champion: the model in service, evaluated by the trainer on the same
validation rows as the model it trains (``snowtrain.trainer.champion``).

End to end (the trainer as the pod runs it, on the Snowflake emulator): a first fine-tune
exports a classifier, and later runs name it as their champion. The proof that the rows are
the same is that the same model must score the same: the first run's own final evaluation
and the later run's evaluation of its export agree exactly. Copies of that export with its
labels reordered, or with its vocabulary renumbered (another tokenizer, the same function
of the text), must score the same again.

In process (real models, no Snowflake): label sets that differ, another task, a language
model with another tokenizer, and SIGTERM.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

from tests.fixtures.snowflake import fresh_database
from tests.integration.trainer_run import (
    LABELS,
    TrainerRun,
    finish,
    run_trainer,
    sentiment_config,
    sentiment_table,
    start_trainer,
    tiny_bert_dir,
    tiny_gpt2_dir,
    trainer_config,
    trainer_env,
    wait_for_event,
)

EVAL_METRICS = ("evalLoss", "evalAccuracy", "evalMacroF1")
TRAINING = {
    "batchSize": 8,
    "learningRate": 2e-3,
    "warmupRatio": 0.1,
    "maxSeqLength": 32,
    "checkpoint": {"keep": 1},
}


# --------------------------------------------------------------------------- model copies
def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def relabelled_copy(src: Path, dst: Path, labels: list[str]) -> Path:
    """A copy of the classifier in ``src`` whose outputs are ``labels``, in that order.

    Each label the original has keeps its own head row (so its logit is unchanged, wherever
    it now sits); a new label gets a zero row with a bias of 100, which would win every
    prediction if it were not dropped.
    """
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    config = _read_json(dst / "config.json")
    column = {name: int(i) for i, name in config["id2label"].items()}
    weights = load_file(dst / "model.safetensors")
    weight, bias = weights["classifier.weight"], weights["classifier.bias"]
    rows = [weight[column[n]] if n in column else torch.zeros_like(weight[0]) for n in labels]
    biases = [bias[column[n]] if n in column else torch.tensor(100.0) for n in labels]
    weights["classifier.weight"] = torch.stack(rows).contiguous()
    weights["classifier.bias"] = torch.stack(biases).contiguous()
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    config["id2label"] = {str(i): n for i, n in enumerate(labels)}
    config["label2id"] = {n: i for i, n in enumerate(labels)}
    _write_json(dst / "config.json", config)
    if (dst / "snowtrain.json").is_file():
        lineage = _read_json(dst / "snowtrain.json")
        lineage["labels"] = labels
        _write_json(dst / "snowtrain.json", lineage)
    if (dst / "label_map.json").is_file():
        _write_json(dst / "label_map.json", {"id2label": config["id2label"]})
    return dst


def renumbered_vocab_copy(src: Path, dst: Path) -> Path:
    """A copy of the BERT classifier in ``src`` with its ordinary tokens' ids reversed, and
    the embedding rows moved with them: another tokenizer (``get_vocab`` differs, as do the
    ids of every text) for the same function of the text."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    spec = _read_json(dst / "tokenizer.json")
    vocab: dict[str, int] = spec["model"]["vocab"]
    special = {t["id"] for t in spec["added_tokens"]}
    ordinary = sorted(i for i in vocab.values() if i not in special)
    new_id = dict(zip(ordinary, reversed(ordinary), strict=True))
    spec["model"]["vocab"] = {tok: new_id.get(i, i) for tok, i in vocab.items()}
    _write_json(dst / "tokenizer.json", spec)
    weights = load_file(dst / "model.safetensors")
    key = "bert.embeddings.word_embeddings.weight"
    old = weights[key]
    new = old.clone()
    for before, after in new_id.items():
        new[after] = old[before]
    weights[key] = new
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


# --------------------------------------------------------------------------- end to end
@dataclass(frozen=True)
class Trained:
    """The first fine-tune: its export, its base model and what it reported."""

    run: TrainerRun
    model: Path
    base: Path
    db: Any


@pytest.fixture(scope="module")
def trained(tmp_path_factory, snowflake_server):
    """A tiny-BERT fine-tune on a 150-row sentiment table; its export is the champion."""
    tmp = tmp_path_factory.mktemp("champion")
    with fresh_database(snowflake_server["host"], snowflake_server["port"], tmp) as db:
        db.seed_table("REVIEWS", sentiment_table(150))
        base = tiny_bert_dir(tmp / "base")
        config = sentiment_config(db, tmp, base, training={**TRAINING, "maxSteps": 30})
        run = run_trainer(config, trainer_env(db, tmp), tmp)
        assert run.returncode == 0, run.stderr[-3000:]
        yield Trained(run, tmp / "model", base, db)


def run_with_champion(
    trained: Trained, tmp: Path, champion: Path | str, *, steps: int = 4, uri: str | None = None
) -> TrainerRun:
    """A fine-tune of the same base on the same table, with ``champion`` to evaluate."""
    config = sentiment_config(
        trained.db,
        tmp,
        trained.base,
        training={**TRAINING, "maxSteps": steps},
        champion={"path": str(champion), "uri": uri or str(champion)},
    )
    return run_trainer(config, trainer_env(trained.db, tmp), tmp)


def eval_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: metrics[k] for k in EVAL_METRICS}


@pytest.mark.slow
@pytest.mark.snowflake
def test_the_same_model_scores_the_same_as_champion_on_the_same_rows(trained, tmp_path):
    run = run_with_champion(trained, tmp_path, trained.model, uri="pvc://models/sentiment")
    assert run.returncode == 0, run.stderr[-3000:]
    term = run.termination
    first = trained.run.termination
    assert term["outcome"] == "Succeeded"
    same = ("rows", "validationRows", "fingerprint")  # the same rows, the same split
    assert {k: term["data"][k] for k in same} == {k: first["data"][k] for k in same}
    champion = term["champion"]
    assert champion["model"] == "pvc://models/sentiment" and "problem" not in champion
    # What the champion scored when it was trained, to the last bit: the same rows.
    assert eval_metrics(champion["metrics"]) == eval_metrics(first["metrics"])
    assert set(champion["metrics"]) == set(EVAL_METRICS)  # validation metrics only
    assert eval_metrics(term["metrics"]) != eval_metrics(first["metrics"])  # 4 steps, not 30
    assert run.of("done")[0]["champion"] == champion
    line = next(x for x in run.stderr.splitlines() if "champion pvc://models/sentiment" in x)
    own, theirs = term["metrics"]["evalAccuracy"], champion["metrics"]["evalAccuracy"]
    assert f"evalAccuracy {theirs:.4g} (this run {own:.4g})" in line
    assert (tmp_path / "model" / "config.json").is_file()  # exported after it


@pytest.mark.slow
@pytest.mark.snowflake
def test_a_champion_with_its_labels_in_another_order_scores_the_same(trained, tmp_path):
    shuffled = relabelled_copy(trained.model, tmp_path / "shuffled", ["positive", *LABELS[:2]])
    run = run_with_champion(trained, tmp_path, shuffled, steps=2)
    assert run.returncode == 0, run.stderr[-3000:]
    champion = run.termination["champion"]["metrics"]
    first = trained.run.termination["metrics"]
    assert champion["evalAccuracy"] == first["evalAccuracy"]
    assert champion["evalMacroF1"] == first["evalMacroF1"]
    assert champion["evalLoss"] == pytest.approx(first["evalLoss"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.snowflake
def test_a_champion_with_another_tokenizer_reads_the_rows_tokenized_its_way(trained, tmp_path):
    renumbered = renumbered_vocab_copy(trained.model, tmp_path / "renumbered")
    run = run_with_champion(trained, tmp_path, renumbered, steps=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "tokenizing the validation rows again" in run.stderr
    champion = run.termination["champion"]["metrics"]
    first = trained.run.termination["metrics"]
    assert champion["evalAccuracy"] == first["evalAccuracy"]
    assert champion["evalMacroF1"] == first["evalMacroF1"]
    assert champion["evalLoss"] == pytest.approx(first["evalLoss"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.snowflake
def test_two_ranks_evaluate_the_champion_on_their_shares_of_the_same_rows(trained, tmp_path):
    """Each rank holds its share of the validation rows (a sharded ingest) and tokenizes it
    again for a champion with another tokenizer; the sums over both ranks are the one-rank
    numbers (the loss to rounding: it is summed in another order)."""
    renumbered = renumbered_vocab_copy(trained.model, tmp_path / "renumbered")
    config = sentiment_config(
        trained.db,
        tmp_path,
        trained.base,
        training={**TRAINING, "maxSteps": 2, "batchSize": 4},
        champion={"path": str(renumbered), "uri": "champion"},
    )
    env = trainer_env(trained.db, tmp_path, SNOWTRAIN_PROCESSES_PER_NODE="2")
    run = run_trainer(config, env, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.of("start")[0]["ranks"] == 2
    [done] = run.of("done")  # rank 1 is silent
    champion = done["champion"]["metrics"]
    first = trained.run.termination["metrics"]
    assert champion["evalAccuracy"] == first["evalAccuracy"]
    assert champion["evalMacroF1"] == first["evalMacroF1"]
    assert champion["evalLoss"] == pytest.approx(first["evalLoss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.snowflake
def test_sigterm_during_the_champions_evaluation_preempts_and_a_rerun_finishes(trained, tmp_path):
    """SIGTERM as the final checkpoint is written: the training is done, but the champion's
    evaluation (its rows tokenized again make it the longer part) stops for it. The run
    ends Preempted at its final step, and a rerun resumes there, evaluates and exports."""
    import signal

    renumbered = renumbered_vocab_copy(trained.model, tmp_path / "renumbered")
    config = sentiment_config(
        trained.db,
        tmp_path,
        trained.base,
        training={**TRAINING, "maxSteps": 4},
        champion={"path": str(renumbered), "uri": "champion"},
    )
    env = trainer_env(trained.db, tmp_path)
    proc = start_trainer(config, env, tmp_path)
    wait_for_event(proc, "checkpoint", step=4)
    proc.send_signal(signal.SIGTERM)
    run = finish(proc, tmp_path)
    assert run.returncode == 75, run.stderr[-3000:]
    term = run.termination
    assert term["outcome"] == "Preempted" and term["step"] == term["totalSteps"] == 4
    assert "while evaluating the champion" in term["message"] and "champion" not in term
    assert not (tmp_path / "model").exists()

    again = run_trainer(config, env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.of("start")[0]["resumedFromStep"] == 4
    champion = again.termination["champion"]["metrics"]
    assert champion["evalAccuracy"] == trained.run.termination["metrics"]["evalAccuracy"]


@pytest.mark.slow
@pytest.mark.snowflake
def test_a_missing_champion_is_a_problem_not_a_failure(trained, tmp_path):
    missing = tmp_path / "no-such-model"
    run = run_with_champion(trained, tmp_path, missing, steps=2)
    assert run.returncode == 0, run.stderr[-3000:]
    term = run.termination
    assert term["outcome"] == "Succeeded" and "evalAccuracy" in term["metrics"]
    assert term["champion"] == {
        "model": str(missing),
        "problem": f"the champion's directory {missing} does not exist",
    }
    assert (tmp_path / "model" / "config.json").is_file()


def arithmetic_table(rows: int) -> pa.Table:
    """(ID, PROMPT, COMPLETION): sums of small numbers, every prompt its own."""
    pairs = [(f"What is {i} plus {i % 7}?", f" {i + i % 7}") for i in range(rows)]
    return pa.table(
        {
            "ID": list(range(rows)),
            "PROMPT": [p for p, _ in pairs],
            "COMPLETION": [c for _, c in pairs],
        }
    )


@pytest.mark.slow
@pytest.mark.snowflake
def test_a_language_models_champion_reports_its_perplexity(snowflake_db, tmp_path):
    """The base model as the champion of its own fine-tune: the same tokenizer, so the
    per-token loss and perplexity compare."""
    snowflake_db.seed_table("QA", arithmetic_table(60))
    base = tiny_gpt2_dir(tmp_path / "base")
    config = trainer_config(
        snowflake_db,
        tmp_path,
        task="causal-lm",
        table="QA",
        columns={"prompt": "PROMPT", "completion": "COMPLETION"},
        baseModel=str(base),
        training={"batchSize": 8, "maxSeqLength": 32, "maxSteps": 20, "learningRate": 3e-3},
        champion={"path": str(base), "uri": "hf://tiny-gpt2"},
    )
    run = run_trainer(config, trainer_env(snowflake_db, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    term = run.termination
    assert term["data"]["validationRows"] > 0
    champion = term["champion"]
    assert champion["model"] == "hf://tiny-gpt2" and "problem" not in champion
    assert set(champion["metrics"]) == {"evalLoss", "perplexity"}
    assert champion["metrics"]["perplexity"] == pytest.approx(
        math.exp(champion["metrics"]["evalLoss"])
    )
    # The untrained base against its fine-tune, on rows neither trained on.
    assert champion["metrics"]["evalLoss"] > term["metrics"]["evalLoss"]
    print("perplexity: champion", champion["metrics"]["perplexity"], "run", term["metrics"])


# --------------------------------------------------------------------------- in process
class TableSource:
    """The validation split as the builders read it, from an in-memory table."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def iter_batches(self, split: str = "train"):
        yield from self.table.to_batches(max_chunksize=16)


@dataclass(frozen=True)
class Rows:
    """Validation rows tokenized for the model in ``model_dir`` (its tokenizer)."""

    rows: Any
    model_dir: Path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """A tiny BERT classifier (random weights, LABELS) in the trainer's export layout."""
    from snowtrain.trainer import models

    tmp = tmp_path_factory.mktemp("classifier")
    base = tiny_bert_dir(tmp / "base")
    tokenizer = models.load_tokenizer(str(base))
    model = models.load_classifier(str(base), LABELS, tokenizer)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    _write_json(tmp / "model" / "snowtrain.json", {"task": "classification", "labels": LABELS})
    return tmp / "model"


def validation_rows(model_dir: Path, tmp: Path, **fields: Any) -> Any:
    """60 sentiment rows as the trainer's validation set, tokenized as ``model_dir`` does."""
    from snowtrain.trainer import models
    from snowtrain.trainer.champion import ValidationRows
    from snowtrain.trainer.data.tokenize import build_classification
    from snowtrain.trainer.precision import Precision

    table = sentiment_table(60, seed=1).rename_columns(["id", "text", "label"])
    source = TableSource(table.select(["text", "label"]))
    label2id = {label: i for i, label in enumerate(LABELS)}
    tokenizer = models.load_tokenizer(str(model_dir))
    data = build_classification(source, "validation", tokenizer, label2id, 32, tmp / "own")

    def retokenize(other: Any) -> Any:
        return build_classification(source, "validation", other, label2id, 32, tmp / "again")

    return ValidationRows(
        **{
            "data": data,
            "collate": data.collate,
            "tokenizer": tokenizer,
            "task": "classification",
            "labels": LABELS,
            "batch_size": 8,
            "precision": Precision(None, None),
            "sharded": False,
            "retokenize": retokenize,
            **fields,
        }
    )


def champion_of(path: Path | str, rows: Any, **kwargs: Any) -> Any:
    from snowtrain.api.trainer_config import ChampionConfig
    from snowtrain.trainer.champion import evaluate_champion
    from snowtrain.trainer.distributed import World

    champion = ChampionConfig(path=str(path), uri=f"uri:{path}")
    return evaluate_champion(champion, rows, world=World(), **kwargs)


def predictions(model_dir: Path, rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of the classifier in ``model_dir`` over every validation row."""
    from snowtrain.trainer import models

    tokenizer = models.load_tokenizer(str(model_dir))
    model = models.load_trained_classifier(str(model_dir), tokenizer).eval()
    batch = rows.collate([rows.data[i] for i in range(len(rows.data))])
    labels = batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits, labels


def test_labels_are_mapped_by_name_and_the_champions_extra_label_is_dropped(classifier, tmp_path):
    rows = validation_rows(classifier, tmp_path)
    original = champion_of(classifier, rows)
    assert original.problem is None and original.metrics.eval_accuracy is not None
    extra = relabelled_copy(classifier, tmp_path / "extra", ["mixed", "positive", *LABELS[:2]])
    mapped = champion_of(extra, rows)
    assert mapped.problem is None
    assert mapped.metrics.eval_accuracy == original.metrics.eval_accuracy
    assert mapped.metrics.eval_macro_f1 == original.metrics.eval_macro_f1
    assert mapped.metrics.eval_loss == pytest.approx(original.metrics.eval_loss, rel=1e-6)


def test_a_label_the_champion_lacks_counts_as_its_wrong_prediction(classifier, tmp_path):
    rows = validation_rows(classifier, tmp_path)
    fewer = relabelled_copy(classifier, tmp_path / "fewer", ["positive", "negative"])
    result = champion_of(fewer, rows)
    logits, labels = predictions(classifier, rows)
    logits[:, LABELS.index("neutral")] = float("-inf")  # never predicted, its rows all wrong
    expected = (logits.argmax(-1) == labels).double().mean().item()
    assert result.metrics.eval_accuracy == pytest.approx(expected)
    assert (labels == LABELS.index("neutral")).any()  # so the loss on those rows is infinite
    assert result.metrics.eval_loss is None
    assert "lacks the label(s) neutral" in result.problem and "evalLoss" in result.problem


def test_an_unmerged_lora_champion_is_evaluated_with_its_adapter(classifier, tmp_path):
    """A LoRA fine-tune exported with ``merge: false`` holds the base weights and the
    adapter: the champion is the two together, as the model server serves it."""
    from snowtrain.api.spec import LoraSpec
    from snowtrain.trainer import models
    from snowtrain.trainer.export import export_model
    from snowtrain.trainer.lora import apply_lora

    rows = validation_rows(classifier, tmp_path)
    tokenizer = models.load_tokenizer(str(classifier))

    def export(merge: bool) -> Path:
        torch.manual_seed(0)
        model = apply_lora(
            models.load_trained_classifier(str(classifier), tokenizer),
            LoraSpec(r=4, alpha=8, dropout=0.0),
            "classification",
        )
        for name, param in model.named_parameters():
            if "lora_B" in name:  # a trained adapter, not peft's zero (no-op) start
                param.data.normal_(0.0, 0.5)
        return export_model(
            tmp_path / f"merge-{merge}",
            model,
            tokenizer,
            lineage_record={"task": "classification", "labels": LABELS},
            metrics={},
            labels=LABELS,
            lora_merge=merge,
        )

    merged, unmerged = champion_of(export(True), rows), champion_of(export(False), rows)
    assert unmerged.problem is None
    assert unmerged.metrics.eval_loss == pytest.approx(merged.metrics.eval_loss, rel=1e-5)
    assert merged.metrics.eval_loss != champion_of(classifier, rows).metrics.eval_loss


def test_a_champion_knowing_none_of_the_labels_is_not_evaluated(classifier, tmp_path):
    rows = validation_rows(classifier, tmp_path)
    generic = relabelled_copy(classifier, tmp_path / "generic", ["LABEL_0", "LABEL_1"])
    result = champion_of(generic, rows)
    assert result.metrics is None
    assert result.problem == (
        "the champion's labels LABEL_0, LABEL_1 share none with this run's "
        "negative, neutral, positive"
    )


def test_a_classifier_with_another_tokenizer_is_evaluated_on_the_rows_tokenized_again(
    classifier, tiny_classifier_dir, tmp_path
):
    """``tiny_classifier_dir`` has its own WordPiece vocabulary: the rows are tokenized
    again with it, so it scores as it does on its own tokens of the same texts."""
    rows = validation_rows(classifier, tmp_path)
    result = champion_of(tiny_classifier_dir, rows)
    assert result.problem is None
    own = validation_rows(tiny_classifier_dir, tmp_path / "own")
    expected = champion_of(tiny_classifier_dir, own)
    assert result.metrics == expected.metrics


def test_a_language_model_with_another_tokenizer_is_not_compared(tiny_causal_lm_dir, tmp_path):
    from snowtrain.trainer import models
    from snowtrain.trainer.champion import TOKENIZER_DIFFERS, ValidationRows
    from snowtrain.trainer.data.tokenize import build_causal_lm
    from snowtrain.trainer.precision import Precision

    base = tiny_gpt2_dir(tmp_path / "base")  # a BPE trained on other text than the champion's
    tokenizer = models.load_tokenizer(str(base))
    source = TableSource(
        arithmetic_table(10).rename_columns(["id", "prompt", "completion"]).drop(["id"])
    )
    data = build_causal_lm(source, "validation", tokenizer, 32, tmp_path / "lm")
    rows = ValidationRows(
        data=data,
        collate=data.collate,
        tokenizer=tokenizer,
        task="causal-lm",
        labels=None,
        batch_size=4,
        precision=Precision(None, None),
        sharded=False,
    )
    assert champion_of(tiny_causal_lm_dir, rows).problem == TOKENIZER_DIFFERS
    itself = champion_of(base, rows)  # the same tokenizer: compared
    assert itself.problem is None and itself.metrics.perplexity is not None


def test_a_champion_of_another_task_is_a_problem(classifier, tiny_causal_lm_dir, tmp_path):
    rows = validation_rows(classifier, tmp_path)
    result = champion_of(tiny_causal_lm_dir, rows)
    assert result.metrics is None
    assert result.problem == (
        f"the champion {tiny_causal_lm_dir} is a language model, and this classification "
        "run's validation rows need a sequence classifier"
    )


def test_an_unreadable_champion_is_a_problem(classifier, tmp_path):
    rows = validation_rows(classifier, tmp_path)
    broken = shutil.copytree(classifier, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result = champion_of(broken, rows)
    assert result.metrics is None and result.problem.startswith("cannot load the champion")
    assert "\n" not in result.problem and len(result.problem) <= 300


def test_sigterm_stops_the_champions_evaluation(classifier, tmp_path):
    from snowtrain.trainer.errors import Preempted

    rows = validation_rows(classifier, tmp_path)
    asked = []

    def abort() -> bool:
        asked.append(True)
        return len(asked) > 2  # after loading, at the first batches

    with pytest.raises(Preempted, match="while evaluating the champion"):
        champion_of(classifier, rows, should_abort=abort)
    assert len(asked) == 3


def test_no_validation_rows_is_a_problem(classifier):
    result = champion_of(classifier, None)
    assert result.problem == "this run has no validation rows to evaluate the champion on"


# --------------------------------------------------------------------------- local mode
def test_local_mode_finds_the_champion_next_to_the_job_yaml(tmp_path, monkeypatch):
    import yaml

    from snowtrain.api import parse_job
    from snowtrain.cli.plan import plan_run

    (tmp_path / "models" / "in-service").mkdir(parents=True)
    job = yaml.safe_load(
        (Path(__file__).parents[2] / "manifests/examples/finetune.yaml").read_text()
    )
    job["spec"]["promotion"] = {"metric": "evalAccuracy", "championUri": "models/in-service"}
    monkeypatch.chdir(tmp_path / "models")  # not where the YAML is
    plan = plan_run(parse_job(job), yaml_path=tmp_path / "job.yaml", output=tmp_path / "run")
    assert plan.config.champion is not None
    assert plan.config.champion.path == str(tmp_path / "models" / "in-service")
    assert plan.config.champion.uri == "models/in-service"  # as the job named it
    job["spec"]["promotion"]["championUri"] = "pvc://models/in-service"
    plan = plan_run(parse_job(job), yaml_path=tmp_path / "job.yaml", output=tmp_path / "run")
    assert plan.config.champion.path == "pvc://models/in-service"  # the trainer reports it


def test_local_modes_summary_shows_the_champions_numbers(tmp_path):
    from io import StringIO

    from rich.console import Console

    from snowtrain.api.events import ChampionEvaluation, TrainerMetrics
    from snowtrain.cli.report import summary_table

    def shown(champion: ChampionEvaluation) -> str:
        buf = StringIO()
        Console(file=buf, width=200).print(
            summary_table(
                title="FineTuneJob x",
                outcome="Succeeded",
                metrics={"evalAccuracy": 0.912, "evalLoss": 0.3},
                rows=100,
                wall_seconds=9.0,
                model_dir=tmp_path / "model",
                loss_curve=None,
                champion=champion,
            )
        )
        return buf.getvalue()

    metrics = TrainerMetrics(eval_accuracy=0.875, eval_loss=0.41)
    out = shown(ChampionEvaluation(model="/models/old", metrics=metrics))
    assert "/models/old" in out and "champion eval accuracy" in out and "87.5%" in out
    assert "champion eval loss" in out and "0.4100" in out
    out = shown(ChampionEvaluation(model="/models/old", problem="the champion is gone"))
    assert "champion not evaluated" in out and "the champion is gone" in out


@pytest.mark.slow
@pytest.mark.snowflake
def test_snowtrain_run_reports_the_champion_next_to_the_new_model(tmp_path, tiny_classifier_dir):
    """``snowtrain run`` (the embedded emulator): the champion, named relative to the job
    YAML, is evaluated and its numbers are in the end-of-run table."""
    import os
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(tiny_classifier_dir, tmp_path / "in-service")
    job = yaml.safe_load((root / "manifests/examples/finetune.yaml").read_text())
    job["spec"]["baseModel"] = {"uri": str(tiny_classifier_dir)}
    job["spec"]["data"]["maxRows"] = 200
    job["spec"]["training"].update({"maxSteps": 3, "batchSize": 8, "maxSeqLength": 32})
    job["spec"]["promotion"] = {"metric": "evalAccuracy", "championUri": "in-service"}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")}
    env |= {"SNOWFLAKE_HOME": str(tmp_path / "no-config"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "snowtrain.cli", "run", str(tmp_path / "job.yaml")]
    done = subprocess.run(
        [*command, "--output", str(tmp_path / "run"), "--no-serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=420,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _read_json(tmp_path / "run" / "termination.json")
    champion = summary["champion"]
    assert champion["model"] == "in-service" and "problem" not in champion
    accuracy = champion["metrics"]["evalAccuracy"]
    assert "champion eval accuracy" in done.stdout and f"{accuracy:.1%}" in done.stdout
