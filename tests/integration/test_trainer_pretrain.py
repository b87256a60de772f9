"""Pretraining a tiny llama from scratch on a Snowflake text corpus, tokenizer included."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from tests.integration.trainer_run import grammar_corpus, run_trainer, trainer_config, trainer_env

pytestmark = [pytest.mark.slow, pytest.mark.snowflake]


def unigram_perplexity(tokenizer, texts: list[str]) -> float:
    """Perplexity of the best context-free model: each token's own frequency (EOS included).

    Fitted and scored on the whole corpus, which flatters the baseline (it has seen the
    validation rows); the trained model must still beat it by far.
    """
    tokens: list[int] = []
    for text in texts:
        tokens += [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    counts = Counter(tokens)
    nll = -sum(n * math.log(n / len(tokens)) for n in counts.values()) / len(tokens)
    return math.exp(nll)


def test_pretraining_beats_a_unigram_model_by_far(snowflake_db, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = grammar_corpus(400)
    snowflake_db.seed_table("CORPUS", corpus)
    config = trainer_config(
        snowflake_db,
        tmp_path,
        task="pretrain",
        table="CORPUS",
        columns={"text": "TEXT"},
        architecture={"family": "llama", "size": "tiny"},
        tokenizer={"vocabSize": 320, "minFrequency": 2, "trainRows": 1000},
        training={
            "maxSteps": 60,
            "batchSize": 8,
            "learningRate": 3e-3,
            "warmupRatio": 0.05,
            "maxSeqLength": 64,
        },
    )
    run = run_trainer(config, trainer_env(snowflake_db, tmp_path), tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    out = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(out)
    baseline = unigram_perplexity(tokenizer, corpus.column("TEXT").to_pylist())
    perplexity = run.of("eval")[-1]["perplexity"]
    print(f"validation perplexity {perplexity:.2f} vs unigram baseline {baseline:.2f}")
    assert perplexity < baseline / 3

    lineage = json.loads((out / "snowtrain.json").read_text())
    assert lineage["kind"] == "PretrainJob" and lineage["task"] == "pretrain"
    assert json.loads((out / "metrics.json").read_text())["perplexity"] == perplexity
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) <= 320
    assert (out / "generation_config.json").is_file()
    # The trained tokenizer is kept with the checkpoints, so a resumed run tokenizes the same.
    assert (tmp_path / "checkpoints" / "tokenizer" / "tokenizer.json").is_file()
