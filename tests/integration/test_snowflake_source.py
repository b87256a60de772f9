"""SnowflakeSource against the Snowflake emulator: profile, streaming, split, bad data."""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pytest

from snowtrain.api.trainer_config import TrainerDataConfig
from snowtrain.trainer.data.connection import connect
from snowtrain.trainer.data.credentials import load_credentials
from snowtrain.trainer.data.source import SnowflakeSource
from snowtrain.trainer.data.stage import upload_to_stage
from snowtrain.trainer.data.tokenize import build_causal_lm, build_classification, build_packed
from snowtrain.trainer.errors import DataError, InvalidConfig, Unavailable

pytestmark = pytest.mark.snowflake

CLS = {"text": "TEXT", "label": "LABEL"}
LM = {"prompt": "PROMPT", "completion": "COMPLETION"}


def sentiment(n: int) -> pa.Table:
    labels = ["negative", "neutral", "positive"]
    return pa.table(
        {
            "id": list(range(n)),
            "text": [f"review number {i} says {labels[i % 3]} things" for i in range(n)],
            "label": [labels[i % 3] for i in range(n)],
        }
    )


def source(db, columns=CLS, **data) -> SnowflakeSource:
    data.setdefault("table", "REVIEWS")
    cfg = TrainerDataConfig(snowflake=db.settings(), columns=columns, **data)
    return SnowflakeSource(cfg, env=db.env())


def read(src: SnowflakeSource, split: str) -> pa.Table:
    batches = list(src.iter_batches(split))
    return pa.Table.from_batches(batches) if batches else pa.table({})


def test_profile_counts_rows_and_discovers_sorted_labels(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(60))
    with source(snowflake_db) as src:
        profile = src.profile("classification")
    assert profile.rows == 60
    assert profile.labels == ["negative", "neutral", "positive"]
    assert profile.column_types == {"text": "TEXT", "label": "TEXT"}
    assert profile.validation_rows is None


def test_numeric_labels_become_strings(snowflake_db):
    table = pa.table({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    snowflake_db.seed_table("REVIEWS", table)
    with source(snowflake_db) as src:
        assert src.profile("classification").labels == ["0", "1"]
        got = read(src, "train").column("label").to_pylist()
    assert set(got) <= {"0", "1"}


def test_hash_split_partitions_rows_deterministically(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(400))
    runs = []
    for _ in range(2):
        with source(snowflake_db, validation={"fraction": 0.25}, batch_rows=64) as src:
            batches = list(src.iter_batches("train"))
            assert all(b.num_rows <= 64 for b in batches)
            assert batches[0].schema.names == ["text", "label"]
            train = pa.Table.from_batches(batches)
            val = read(src, "validation")  # served from the spill of the train pass
            fp = src.fingerprint
        runs.append((train.column("text").to_pylist(), val.column("text").to_pylist(), fp))
    (train, val, fp), (train2, val2, fp2) = runs
    assert (train, val) == (train2, val2)
    assert (fp.rows, fp.validation_rows, fp.content_sha256) == (
        fp2.rows,
        fp2.validation_rows,
        fp2.content_sha256,
    )
    assert fp.query_id != fp2.query_id  # each run is its own query
    assert not set(train) & set(val)
    assert len(train) + len(val) == 400
    assert 60 <= len(val) <= 140  # 25% of 400, give or take the hash
    assert (fp.rows, fp.validation_rows) == (len(train), len(val))
    assert fp.to_wire()["fingerprint"].startswith("sha256:") and len(fp.content_sha256) == 64

    # A validation pass without a prior train pass queries again and gets the same rows.
    with source(snowflake_db, validation={"fraction": 0.25}) as src:
        assert read(src, "validation").column("text").to_pylist() == val


def test_fingerprint_changes_with_content(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(50))
    with source(snowflake_db) as src:
        with pytest.raises(RuntimeError):
            src.fingerprint  # noqa: B018 -- not known before a full pass
        list(src.iter_batches("train"))
        before = src.fingerprint
    snowflake_db.execute("UPDATE REVIEWS SET TEXT = 'changed' WHERE ID = 7")
    with source(snowflake_db) as src:
        list(src.iter_batches("train"))
        after = src.fingerprint
    assert before.rows == after.rows
    assert before.content_sha256 != after.content_sha256
    assert after.query_id


def test_max_rows_picks_the_same_rows_every_run(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(100))
    seen = []
    for _ in range(2):
        with source(snowflake_db, max_rows=30, validation={"fraction": 0.0}) as src:
            assert src.profile("classification").rows == 30
            seen.append(read(src, "train").column("text").to_pylist())
    assert len(seen[0]) == 30 and seen[0] == seen[1]


def test_query_source_is_wrapped_safely(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(30))
    query = "SELECT text AS t2, label FROM reviews WHERE text LIKE '%positive%' -- only positives"
    with source(
        snowflake_db, columns={"text": "T2", "label": "LABEL"}, table=None, query=query
    ) as src:
        with pytest.raises(DataError, match="single label class"):
            src.profile("classification")
        assert set(read(src, "train").column("label").to_pylist()) == {"positive"}


def test_separate_validation_table(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(40))
    snowflake_db.seed_table("HELDOUT", sentiment(9))
    with source(snowflake_db, validation={"table": "HELDOUT"}) as src:
        profile = src.profile("classification")
        assert (profile.rows, profile.validation_rows) == (40, 9)
        assert read(src, "train").num_rows == 40
        assert read(src, "validation").num_rows == 9
        assert (src.fingerprint.rows, src.fingerprint.validation_rows) == (40, 9)


def test_iter_texts_stops_at_limit(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(50))
    with source(snowflake_db, columns={"text": "TEXT"}) as src:
        texts = list(src.iter_texts(limit=7))
    assert len(texts) == 7 and all(isinstance(t, str) for t in texts)


# -- bad data: each case fails before training with a DataError naming column and count ------


def test_missing_column_is_named(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(10))
    src = source(snowflake_db, columns={"text": "BODY", "label": "LABEL"})
    with src, pytest.raises(DataError, match="BODY") as err:
        src.profile("classification")
    assert err.value.column == "BODY"


def test_empty_result(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(0))
    with source(snowflake_db) as src, pytest.raises(DataError, match="no rows") as err:
        src.profile("classification")
    assert err.value.bad_rows == 0


@pytest.mark.parametrize("role", ["text", "label"])
def test_null_values_are_counted(snowflake_db, role):
    table = sentiment(20)
    values = table.column(role).to_pylist()
    for i in (2, 5, 11):
        values[i] = None
    snowflake_db.seed_table(
        "REVIEWS",
        table.set_column(table.schema.get_field_index(role), role, pa.array(values, pa.string())),
    )
    with source(snowflake_db) as src, pytest.raises(DataError, match="NULL") as err:
        src.profile("classification")
    assert (err.value.column, err.value.bad_rows) == (role.upper(), 3)


def test_single_label_class(snowflake_db):
    table = pa.table({"text": ["a", "b", "c"], "label": ["pos", "pos", "pos"]})
    snowflake_db.seed_table("REVIEWS", table)
    with source(snowflake_db) as src, pytest.raises(DataError, match="single label") as err:
        src.profile("classification")
    assert (err.value.column, err.value.bad_rows) == ("LABEL", 3)


@pytest.mark.parametrize("bad", ["prompt", "completion"])
def test_non_text_prompt_or_completion(snowflake_db, bad):
    data = {"prompt": ["q1", "q2"], "completion": ["a1", "a2"]}
    data[bad] = [1, 2]
    snowflake_db.seed_table("PAIRS", pa.table(data))
    src = source(snowflake_db, columns=LM, table="PAIRS")
    with src, pytest.raises(DataError, match="must be text") as err:
        src.profile("causal-lm")
    assert (err.value.column, err.value.bad_rows) == (bad.upper(), 2)


def test_validation_labels_must_be_known(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(12))
    snowflake_db.seed_table(
        "HELDOUT", pa.table({"text": ["x", "y"], "label": ["angry", "neutral"]})
    )
    src = source(snowflake_db, validation={"table": "HELDOUT"})
    with src, pytest.raises(DataError, match="angry") as err:
        src.profile("classification")
    assert err.value.bad_rows == 1


def test_missing_table_is_a_data_error(snowflake_db):
    with source(snowflake_db, table="NO_SUCH_TABLE") as src, pytest.raises(DataError):
        src.profile("classification")


# -- injection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", ["REVIEWS; DROP TABLE REVIEWS", 'REVIEWS"; DROP TABLE REVIEWS; --', "REVIEWS -- x"]
)
def test_table_name_with_sql_is_refused_and_table_survives(snowflake_db, table):
    snowflake_db.seed_table("REVIEWS", sentiment(5))
    with pytest.raises(InvalidConfig):
        src = source(snowflake_db, table=table)
        src.profile("classification")
        list(src.iter_batches("train"))
    assert snowflake_db.table_exists("REVIEWS")


def test_query_with_second_statement_is_refused_and_table_survives(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(5))
    with pytest.raises(InvalidConfig, match="single SELECT"):
        source(snowflake_db, table=None, query="SELECT * FROM REVIEWS; DROP TABLE REVIEWS")
    assert snowflake_db.table_exists("REVIEWS")


# -- connection -----------------------------------------------------------------------------


def test_connect_uses_env_credentials_and_never_logs_the_password(snowflake_db, caplog):
    caplog.set_level(logging.DEBUG)
    creds = load_credentials(snowflake_db.settings(), env=snowflake_db.env())
    conn = connect(snowflake_db.settings(), creds)
    try:
        assert conn.cursor().execute("SELECT 1").fetchone() == (1,)
    finally:
        conn.close()
    assert snowflake_db.password not in caplog.text
    assert snowflake_db.password not in repr(creds)


def test_unreachable_server_fails_fast_with_unavailable(snowflake_db):
    settings = snowflake_db.settings(
        host="127.0.0.1", port=9, login_timeout_seconds=2, network_timeout_seconds=2, retries=1
    )
    creds = load_credentials(settings, env=snowflake_db.env())
    start = time.monotonic()
    with pytest.raises(Unavailable, match="after 2 attempt") as err:
        connect(settings, creds, sleep=lambda s: None)
    # The 2 s login timeout is honoured (about 2 s in all), not the connector's default of
    # minutes per attempt; the bound only separates those two, it is no speed target.
    assert time.monotonic() - start < 60
    assert snowflake_db.password not in str(err.value)


# -- end to end: Snowflake -> token store, and model upload ---------------------------------


def test_classification_store_from_the_emulator(snowflake_db, wordpiece_tokenizer, tmp_path):
    snowflake_db.seed_table("REVIEWS", sentiment(120))
    with source(snowflake_db, validation={"fraction": 0.2}, batch_rows=16) as src:
        labels = src.profile("classification").labels
        label2id = {name: i for i, name in enumerate(labels)}
        train = build_classification(src, "train", wordpiece_tokenizer, label2id, 32, tmp_path)
        val = build_classification(src, "validation", wordpiece_tokenizer, label2id, 32, tmp_path)
        fingerprint = src.fingerprint
    assert len(train) + len(val) == 120 and len(val) > 0
    assert train.meta["data"] == fingerprint.to_wire()
    batch = train.collate([train[i] for i in range(4)])
    assert batch["labels"].shape == (4,) and set(batch["labels"].tolist()) <= {0, 1, 2}


def test_upload_model_dir_to_stage(snowflake_db, tmp_path):
    model = tmp_path / "model"
    (model / "adapter").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    snowflake_db.execute("CREATE STAGE MODELS")
    uploaded = upload_to_stage(snowflake_db.conn, model, "@MODELS/jobs/demo")
    assert uploaded == [
        '@"MODELS"/jobs/demo/adapter/adapter_model.safetensors',
        '@"MODELS"/jobs/demo/config.json',
    ]
    listed = {row[0] for row in snowflake_db.execute("LIST @MODELS")}
    assert listed == {
        "models/jobs/demo/config.json",
        "models/jobs/demo/adapter/adapter_model.safetensors",
    }


def test_causal_lm_store_from_the_emulator(snowflake_db, bpe_tokenizer, tmp_path):
    pairs = pa.table(
        {
            "prompt": [f"question {i}: what is {i} plus {i}?" for i in range(30)],
            "completion": [f" answer: {2 * i}" for i in range(30)],
        }
    )
    snowflake_db.seed_table("PAIRS", pairs)
    with source(snowflake_db, columns=LM, table="PAIRS", validation={"fraction": 0.0}) as src:
        profile = src.profile("causal-lm")
        assert (profile.rows, profile.labels) == (30, None)
        ds = build_causal_lm(src, "train", bpe_tokenizer, 64, tmp_path)
    assert len(ds) == 30
    item = ds[0]
    completion = item["input_ids"][item["labels"] != -100]
    assert bpe_tokenizer.decode(completion).startswith(" answer:")
    assert int(completion[-1]) == bpe_tokenizer.eos_token_id


def test_pretrain_corpus_from_the_emulator(snowflake_db, bpe_tokenizer, tmp_path):
    snowflake_db.seed_table("CORPUS", sentiment(50).select(["text"]))
    with source(snowflake_db, columns={"text": "TEXT"}, table="CORPUS") as src:
        assert src.profile("pretrain").rows == 50
        assert len(list(src.iter_texts(limit=10))) == 10
        train = build_packed(src, "train", bpe_tokenizer, 16, tmp_path)
        val = build_packed(src, "validation", bpe_tokenizer, 16, tmp_path)
        fp = src.fingerprint
    assert len(train) >= 10 and len(val) >= 1
    assert fp.rows + fp.validation_rows == 50
    assert train.meta["data"]["rows"] == fp.rows


def test_the_training_query_runs_while_the_caller_does_other_work(snowflake_db):
    """Submitted before the model loads, read by the next train pass: the rows are those
    the query saw when it ran (the table is dropped before the pass starts here)."""
    snowflake_db.seed_table("REVIEWS", sentiment(90))
    with source(snowflake_db, validation={"fraction": 0.2}) as plain:
        plain.profile("classification")
        expected = read(plain, "train")
        expected_fp = plain.fingerprint
    with source(snowflake_db, validation={"fraction": 0.2}) as early:
        early.profile("classification")
        early.start_training_query()
        deadline = time.monotonic() + 300  # a hang guard: the drop must come after the query
        while not early._early_query.done():
            assert time.monotonic() < deadline, "the early training query never finished"
            time.sleep(0.05)
        snowflake_db.execute("DROP TABLE REVIEWS")
        got = read(early, "train")
        assert got.equals(expected)
        assert early.fingerprint.content_sha256 == expected_fp.content_sha256
        assert read(early, "validation").num_rows == expected_fp.validation_rows
        with pytest.raises(DataError, match="does not exist"):
            read(early, "train")  # a second pass queries again: the table is gone now


def test_an_early_training_query_fails_where_a_late_one_would(snowflake_db):
    snowflake_db.seed_table("REVIEWS", sentiment(30))
    with source(snowflake_db) as src:
        src.profile("classification")
        snowflake_db.execute("DROP TABLE REVIEWS")
        src.start_training_query()  # no error here: the query runs on its own thread
        with pytest.raises(DataError, match="does not exist"):
            read(src, "train")


def test_a_result_snowflake_sends_in_chunks_streams_whole_and_in_order(
    snowflake_db, chunked_snowflake
):
    """The emulator answers as Snowflake does (first rows inline, the rest as gzip'd Arrow
    chunks behind URLs needing the query's key): the connector's download path runs and the
    pass sees every row once."""
    snowflake_db.seed_table("REVIEWS", sentiment(1000))
    chunks = chunked_snowflake[1]
    before = chunks.downloads
    with source(snowflake_db, batch_rows=64, validation={"fraction": 0.0}) as src:
        texts = read(src, "train").column("text").to_pylist()
    assert chunks.downloads - before >= 9  # 100 rows inline, 900 downloaded
    assert len(texts) == 1000 and sorted(texts) == sorted(
        sentiment(1000).column("text").to_pylist()
    )


class ThreadExchange:
    """The ranks' collectives between threads of this process (the trainer's are gloo's,
    run for real under torchrun in test_trainer_launch.py): same contract, in order."""

    def __init__(self, ranks: int) -> None:
        import threading

        self.ranks = ranks
        self._barrier = threading.Barrier(ranks)
        self._slots: list[Any] = [None] * ranks

    def _swap(self, rank: int, obj: Any) -> list[Any]:
        self._slots[rank] = obj
        self._barrier.wait()
        out = list(self._slots)
        self._barrier.wait()  # nobody overwrites a slot before everyone read it
        return out

    def for_rank(self, rank: int) -> Any:
        exchange = self

        class Bound:
            def broadcast(self, obj: Any) -> Any:
                return exchange._swap(rank, obj)[0]

            def all_gather(self, obj: Any) -> list[Any]:
                return exchange._swap(rank, obj)

            def gather_bytes(self, data: bytes) -> list[bytes] | None:
                everyone = exchange._swap(rank, data)
                return everyone if rank == 0 else None

        return Bound()


def _read_sharded(db, ranks: int, **data) -> list[dict]:
    """Every rank's view of a sharded pass (profile, both splits, fingerprint), in threads."""
    import threading

    from snowtrain.trainer.data.shard import Shard

    exchange = ThreadExchange(ranks)
    out: list[dict] = [{} for _ in range(ranks)]
    errors: list[BaseException] = []

    def rank_main(rank: int) -> None:
        try:
            cfg = TrainerDataConfig(snowflake=db.settings(), columns=CLS, table="REVIEWS", **data)
            shard = Shard(rank, ranks, exchange.for_rank(rank))
            with SnowflakeSource(cfg, env=db.env(), shard=shard) as src:
                src.start_training_query()
                out[rank]["labels"] = src.profile("classification").labels
                out[rank]["train"] = read(src, "train").column("text").to_pylist()
                out[rank]["validation"] = read(src, "validation").column("text").to_pylist()
                out[rank]["fingerprint"] = src.fingerprint
        except BaseException as exc:
            errors.append(exc)
            exchange._barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def test_ranks_read_disjoint_shares_that_make_the_one_rank_pass(snowflake_db, chunked_snowflake):
    """Sharded ingest: rank 0 queries, each rank downloads only the chunks of its range of
    the ordered result; in rank order the shares are the one-rank pass exactly (both splits),
    and every rank knows the one-rank fingerprint, counts and labels."""
    snowflake_db.seed_table("REVIEWS", sentiment(1000))
    data = {"validation": {"fraction": 0.2}, "batch_rows": 64}
    [whole] = _read_sharded(snowflake_db, 1, **data)
    downloads = chunked_snowflake[1].downloads
    ranks = _read_sharded(snowflake_db, 3, **data)
    # 9 remote chunks for the whole result; each rank fetched only those overlapping its
    # rows (a few), not all of them three times (27; a download the connector retried on a
    # loaded machine counts twice, hence no exact figure)
    assert chunked_snowflake[1].downloads - downloads < 2 * 9
    assert [t for r in ranks for t in r["train"]] == whole["train"]
    assert [t for r in ranks for t in r["validation"]] == whole["validation"]
    sizes = [len(r["train"]) + len(r["validation"]) for r in ranks]
    assert max(sizes) - min(sizes) <= 1  # contiguous ranges of the result, within a row
    for r in ranks:
        assert r["fingerprint"].content_sha256 == whole["fingerprint"].content_sha256
        assert (r["fingerprint"].rows, r["fingerprint"].validation_rows) == (
            whole["fingerprint"].rows,
            whole["fingerprint"].validation_rows,
        )
        assert r["labels"] == whole["labels"]


def test_a_failed_query_on_rank_0_fails_every_rank_with_its_reason(snowflake_db):
    """The other ranks wait for rank 0's result: its error must reach them, not a hang."""
    with pytest.raises(AssertionError) as failed:
        _read_sharded(snowflake_db, 2)  # no REVIEWS table
    raised = str(failed.value)
    assert raised.count("DataError") == 2 and "REVIEWS" in raised
