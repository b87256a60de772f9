"""The data query against the emulator: hostile texts never reach it, tricky good ones run,
and every statement carrying the query goes with the connector's single-statement guard.

fakesnow runs every statement of a text (it ignores MULTI_STATEMENT_COUNT, as test_the_emulator_itself_would_run_the_old_bypass shows), so the
table surviving here is the work of ``snowtrain.api.query.check_query`` alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa
import pytest
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.connector.errors import ProgrammingError

from snowtrain.api.trainer_config import TrainerDataConfig
from snowtrain.trainer.data.source import SnowflakeSource
from snowtrain.trainer.errors import InvalidConfig

pytestmark = pytest.mark.snowflake

# What the old regex checker let through: it read `a$$b` as opening a $$ string up to `c$$d`.
OLD_BYPASS = "SELECT text AS a$$b, label FROM reviews; DROP TABLE reviews; SELECT 1 AS c$$d"


def reviews(n: int) -> pa.Table:
    labels = ["negative", "positive"]
    return pa.table(
        {"text": [f"review {i} a;b" for i in range(n)], "label": [labels[i % 2] for i in range(n)]}
    )


def source(db: Any, query: str, columns: dict[str, str]) -> SnowflakeSource:
    cfg = TrainerDataConfig(snowflake=db.settings(), columns=columns, query=query)
    return SnowflakeSource(cfg, env=db.env())


def test_the_emulator_itself_would_run_the_old_bypass(snowflake_db):
    """Why the check must be right: sent as is, the emulator drops the table."""
    snowflake_db.seed_table("REVIEWS", reviews(4))
    # It runs the DROP, then fails on what follows; the table is gone either way.
    with contextlib.suppress(ProgrammingError):
        snowflake_db.execute(OLD_BYPASS)
    assert not snowflake_db.table_exists("REVIEWS")


@pytest.mark.parametrize(
    "query",
    [
        OLD_BYPASS,
        'SELECT text AS "a$$b", label FROM reviews; DROP TABLE reviews',
        "SELECT text, label FROM reviews -- c\r'\n; DROP TABLE reviews; --'",
        "WITH x AS (SELECT text, label FROM reviews) DELETE FROM reviews",
    ],
)
def test_hostile_queries_are_refused_before_sending_and_the_table_survives(snowflake_db, query):
    snowflake_db.seed_table("REVIEWS", reviews(4))
    with pytest.raises(InvalidConfig):
        source(snowflake_db, query, {"text": "TEXT", "label": "LABEL"})
    assert snowflake_db.table_exists("REVIEWS")


def test_a_tricky_but_single_select_runs_with_the_single_statement_guard(snowflake_db, monkeypatch):
    snowflake_db.seed_table("REVIEWS", reviews(10))
    sent: list[tuple[str, Any]] = []
    real_execute = SnowflakeCursor.execute

    def spy(self: SnowflakeCursor, command: str, *args: Any, **kwargs: Any) -> Any:
        sent.append((command, kwargs.get("num_statements")))
        return real_execute(self, command, *args, **kwargs)

    monkeypatch.setattr(SnowflakeCursor, "execute", spy)
    query = (
        '/* lead */ SELECT text AS "T$$X", label FROM reviews\n'
        "WHERE text LIKE '%;%' AND label <> 'it''s; -- no' -- trailing; comment\n;"
    )
    with source(snowflake_db, query, {"text": "T$$X", "label": "LABEL"}) as src:
        assert src.profile("classification").rows == 10
        got = pa.Table.from_batches(list(src.iter_batches("train")))
    assert 0 < got.num_rows <= 10 and set(got.column("label").to_pylist()) <= {
        "negative",
        "positive",
    }
    carrying = [n for sql, n in sent if "reviews" in sql]
    assert carrying and all(n == 1 for n in carrying)
    assert snowflake_db.table_exists("REVIEWS")
