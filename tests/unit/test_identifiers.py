"""Injection safety: names carrying SQL are refused before any query is sent.

fakesnow runs several statements in one string, so these guarantees come from our
own validation; the emulator test in tests/integration shows the table survives.
"""

from __future__ import annotations

import pytest

from snowtrain.api.identifiers import (
    InvalidIdentifier,
    canonical_column,
    quote_column,
    quote_stage,
    quote_table,
)
from snowtrain.api.spec import ValidationSource
from snowtrain.api.trainer_config import TrainerDataConfig
from snowtrain.trainer.data.source import SnowflakeSource
from snowtrain.trainer.data.sql import column_ref, subquery
from snowtrain.trainer.data.stage import upload_to_stage
from snowtrain.trainer.errors import InvalidConfig

HOSTILE_TABLES = [
    "T; DROP TABLE T",
    "T;DROP TABLE T",
    'T"; DROP TABLE T; --',
    "T -- comment",
    "T /* c */",
    "T'",
    '"T""x"',
    "T UNION SELECT * FROM SECRETS",
    "(SELECT 1)",
    "DB.SCHEMA.T.EXTRA",
    "",
]


class RecordingConnection:
    """Stands in for a Snowflake connection and records every statement it would run."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def cursor(self) -> RecordingConnection:
        return self

    def execute(self, sql: str, params: object = (), **kwargs: object) -> RecordingConnection:
        self.statements.append(sql)
        return self


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("reviews", '"REVIEWS"'),
        ("db.public.reviews", '"DB"."PUBLIC"."REVIEWS"'),
        ('"Mixed Case-1"', '"Mixed Case-1"'),
        ("T$1", '"T$1"'),
    ],
)
def test_valid_tables_are_quoted(name, quoted):
    assert quote_table(name) == quoted


@pytest.mark.parametrize("name", HOSTILE_TABLES)
def test_hostile_tables_are_refused(name):
    with pytest.raises(InvalidIdentifier):
        quote_table(name)


HOSTILE_COLUMNS = ["text; --", 'a"b', "a.b", "x'", "a/*b", "a)"]


@pytest.mark.parametrize("name", [*HOSTILE_COLUMNS, "a b", "1abc"])
def test_columns_outside_the_grammar_are_refused(name):
    with pytest.raises(InvalidIdentifier):
        quote_column(name)


@pytest.mark.parametrize("name", HOSTILE_COLUMNS)
def test_trainer_refuses_hostile_canonical_columns(name):
    # The trainer config carries canonical names ("My Col" for '"My Col"'): a name that could
    # close the quotes or add SQL is refused there too.
    with pytest.raises(InvalidConfig):
        column_ref(name)


def test_canonical_columns_keep_their_exact_spelling():
    assert canonical_column("text") == "TEXT"
    assert canonical_column('"My Col"') == "My Col"
    assert column_ref(canonical_column('"My Col"')) == '"My Col"'
    assert column_ref(canonical_column("text")) == '"TEXT"'


@pytest.mark.parametrize("stage", ["@S; DROP TABLE T", "@S' ", "S", "@S/../x'; --"])
def test_hostile_stages_are_refused(stage):
    with pytest.raises(InvalidIdentifier):
        quote_stage(stage if stage != "S" else "S;")


@pytest.mark.parametrize("table", HOSTILE_TABLES[:-1])
def test_source_refuses_hostile_table_before_any_query(table):
    conn = RecordingConnection()
    cfg = TrainerDataConfig(table=table, columns={"text": "TEXT", "label": "LABEL"})
    with pytest.raises(InvalidConfig):
        src = SnowflakeSource(cfg, connection=conn)
        src.profile("classification")
        list(src.iter_batches("train"))
    assert conn.statements == []


@pytest.mark.parametrize(
    "columns",
    [{"text": "TEXT; DROP TABLE T", "label": "LABEL"}, {"text": "TEXT", "label": 'L" --'}],
)
def test_source_refuses_hostile_columns_before_any_query(columns):
    conn = RecordingConnection()
    with pytest.raises(InvalidConfig):
        SnowflakeSource(TrainerDataConfig(table="T", columns=columns), connection=conn)
    assert conn.statements == []


@pytest.mark.parametrize(
    "validation", [{"table": "V; DROP TABLE T"}, {"query": "SELECT 1; DROP TABLE T"}]
)
def test_source_refuses_hostile_validation_source(validation):
    conn = RecordingConnection()
    # The config model already refuses such a table; build it unchecked, as a hand-edited
    # ConfigMap would arrive, to show the trainer does not rely on that.
    cfg = TrainerDataConfig(table="T", columns={"text": "TEXT"})
    cfg.validation = ValidationSource.model_construct(**validation)
    with pytest.raises(InvalidConfig):
        SnowflakeSource(cfg, connection=conn)
    assert conn.statements == []


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM T; DROP TABLE T",
        "SELECT * FROM T;\nDROP TABLE T;",
        "DROP TABLE T",
        "DELETE FROM T",
        "/* SELECT */ DROP TABLE T",
        "",
    ],
)
def test_queries_must_be_one_select(query):
    with pytest.raises(InvalidConfig):
        subquery(query)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT ';' AS semi, text FROM T;",
        "WITH x AS (SELECT text FROM T) SELECT * FROM x -- trailing; comment",
        'select "a;b" from T /* ; */',
        "(SELECT text FROM T)",
    ],
)
def test_semicolons_in_strings_and_comments_are_fine(query):
    wrapped = subquery(query)
    # On its own lines, so a trailing -- comment cannot swallow the closing parenthesis.
    assert wrapped.startswith("(\n") and wrapped.endswith("\n)")


def test_stage_upload_refuses_hostile_stage_before_any_put(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    conn = RecordingConnection()
    with pytest.raises(InvalidConfig):
        upload_to_stage(conn, tmp_path, "@MODELS; DROP TABLE T")
    assert conn.statements == []
