"""The data probe's pure parts: the newest value as text, the fingerprint's canonical JSON,
and the one query a config turns into (names quoted, anything else refused)."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

import pytest

from snowtrain.api.probe_config import ProbeConfig
from snowtrain.probe.run import ProbeTarget, fingerprint, newest_text
from snowtrain.trainer.errors import InvalidConfig


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        (dt.datetime(2024, 5, 1, 6, 0, 0, 250000), "2024-05-01T06:00:00.250000"),
        (dt.date(2024, 5, 1), "2024-05-01"),
        (dt.time(6, 30), "06:30:00"),
        (42, "42"),
        (Decimal("12.50"), "12.50"),
        (0.5, "0.5"),
        ("batch-7", "batch-7"),
        (b"\x01\xff", "01ff"),
    ],
)
def test_newest_as_text(value: Any, text: str | None) -> None:
    assert newest_text(value) == text


def test_an_aware_timestamp_is_the_same_text_in_any_session_time_zone() -> None:
    utc = dt.datetime(2024, 5, 1, 6, 0, tzinfo=dt.UTC)
    paris = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert newest_text(utc) == newest_text(paris) == "2024-05-01T06:00:00+00:00"


def test_the_fingerprint_is_sha256_of_canonical_json() -> None:
    text = '{"column":"LOADED_AT","newest":"2024-05-01T10:00:00","rows":5,"source":"\\"EVENTS\\""}'
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert fingerprint('"EVENTS"', "LOADED_AT", 5, "2024-05-01T10:00:00") == expected


def test_every_part_changes_the_fingerprint() -> None:
    base = ('"EVENTS"', "LOADED_AT", 5, "2024-05-01T10:00:00")
    variants = [
        ('"EVENTS2"', "LOADED_AT", 5, "2024-05-01T10:00:00"),
        ('"EVENTS"', "UPDATED_AT", 5, "2024-05-01T10:00:00"),
        ('"EVENTS"', "LOADED_AT", 6, "2024-05-01T10:00:00"),
        ('"EVENTS"', "LOADED_AT", 5, "2024-05-01T10:00:01"),
        ('"EVENTS"', "LOADED_AT", 5, None),
        ('"EVENTS"', None, 5, "2024-05-01T10:00:00"),
    ]
    prints = {fingerprint(*base), *(fingerprint(*v) for v in variants)}
    assert len(prints) == len(variants) + 1
    # null is not the text "None"
    assert fingerprint("s", None, 0, None) != fingerprint("s", "None", 0, "None")


def target(**fields: Any) -> ProbeTarget:
    return ProbeTarget.of(ProbeConfig.model_validate({"name": "nightly", **fields}))


def test_a_table_source_is_quoted_and_its_spelling_does_not_matter() -> None:
    probe = target(table="analytics.events", column="LOADED_AT")
    assert probe.sql == 'SELECT COUNT(*), MAX("LOADED_AT") FROM "ANALYTICS"."EVENTS"'
    assert probe.source == target(table="ANALYTICS.EVENTS", column="LOADED_AT").source
    assert target(table="EVENTS").sql == 'SELECT COUNT(*) FROM "EVENTS"'
    # The column is the canonical spelling: kept exactly, quoted.
    assert target(table="EVENTS", column="Loaded At").sql.startswith(
        'SELECT COUNT(*), MAX("Loaded At")'
    )


def test_a_query_source_is_a_subquery_and_its_comments_are_not_the_source() -> None:
    probe = target(query="-- new loads\nSELECT * FROM EVENTS WHERE ID > 10;", column="LOADED_AT")
    assert probe.sql == (
        'SELECT COUNT(*), MAX("LOADED_AT") FROM (\n'
        "SELECT * FROM EVENTS WHERE ID > 10\n) AS SNOWTRAIN_PROBE"
    )
    assert probe.source == "SELECT * FROM EVENTS WHERE ID > 10"


@pytest.mark.parametrize(
    "fields",
    [
        {"table": "EVENTS", "column": 'X"; DROP TABLE EVENTS; --'},
        {"table": "EVENTS; DROP TABLE EVENTS"},
        {"query": "DELETE FROM EVENTS"},
        {"query": "SELECT 1; DROP TABLE EVENTS"},
        {},
        {"table": "EVENTS", "query": "SELECT 1"},
    ],
)
def test_bad_names_and_queries_are_the_specs_fault(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig):
        target(**fields)
