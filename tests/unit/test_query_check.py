"""``spec.data.query`` must be one read-only SELECT, decided by Snowflake's lexical rules.

The check is the only guard the emulator has (fakesnow runs a second statement: tests/integration/test_snowflake_query_guard.py) and
the main one Snowflake has once an account lifts MULTI_STATEMENT_COUNT, so these cases pin
down what is code and what is a string, a quoted name or a comment. No timing asserts here:
linear growth is shown by bench/bench_query_check.py.
"""

from __future__ import annotations

import pytest

from snowtrain.api.query import UnsafeQuery, check_query
from snowtrain.api.validation import InvalidJob, parse_job
from snowtrain.operator.webhook import review
from snowtrain.trainer.data.sql import subquery
from snowtrain.trainer.errors import InvalidConfig

ACCEPTED = [
    "SELECT text, label FROM reviews",
    "select text from t;",
    "select text from t ;  \n  -- done\n",
    "select text from t; /* trailing comment */",
    "SELECT 'a;b' AS s FROM t",
    "SELECT 'it''s; fine' FROM t",
    "SELECT 'it\\'s; -- not a comment' FROM t",
    "SELECT 'back\\\\' AS slash, ';' FROM t",
    'select "drop" from t',
    'select "a;b", "x--y", "c/*d" from t',
    'select 1 as "a$$b" from t',
    'select "say ""hi"";" from t',
    "select $$; drop table t; $$ as s from t",
    "select $$it's$$ from t",
    "select merge_id, update_time, deleted from t",
    "select t.insert_count from t -- ; drop table t",
    "select 1 // ; drop table t",
    "select /* ; drop table t; */ 1",
    "select /*/ still a comment ; */ 1",
    "-- leading comment\nselect 1",
    "WITH x AS (SELECT text FROM t) SELECT * FROM x",
    "with recursive r (n) as (select 1 union all select n + 1 from r where n < 3) select n from r",
    "with a as (select 1 as v), b as (select 2 as v) select * from a union all select * from b",
    'with "Q" as (with inner_q as (select 1 as v) select v from inner_q) select * from "Q"',
    "WITH x AS (SELECT 1 AS v) (SELECT v FROM x)",
    "(SELECT text FROM t)",
    "((select 1) union (select 2))",
    "select $1, $2 from @stage/file.csv",
    "select system$typeof(1)",
    "select filter([1, 2], x -> x > 1)",
    "select v:a.b::string from t",
    "SELECT 'grüße', \"naïve\", '数据' FROM t",
    "select * from t where d > '2024-01-01' order by id limit 10",
    "SELECT\r\n  text\r\nFROM t -- windows line ends\r\n",
]

REFUSED = [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("-- only a comment", "empty"),
    (";", "empty"),
    ("select 1; drop table t", "second statement"),
    ("select 1;\ndrop table t;", "second statement"),
    ("select 1;;", "second statement"),
    ("select 1; select 2", "second statement"),
    # The old checker read `a$$b` as opening a $$ string; Snowflake reads a name.
    ("select 1 as a$$b from t; drop table x; select c$$d", "'$$' inside a name"),
    ("select 1$$x$$", "'$$' inside a name"),
    ('select 1 as "a$$b" from t; drop table x; select "$$"', "second statement"),
    ("select 1 -- hidden\n; drop table t", "second statement"),
    ("select 1 /* ; */ ; drop table t", "second statement"),
    ("select 1 /* a /* b */ ; drop table t; */", "do not nest"),
    ("select 1 /* /* */ ' */ ; drop table t; --'", "do not nest"),
    ("select 1 /* a /*/ 2", "do not nest"),
    ("select 1 /*/*/ 2", "do not nest"),
    ("select 1 --x\r'\n; drop table t; --'", "line break"),
    ("select 1 --x\u2028; drop table t", "line break"),
    ("select 'unterminated", "unterminated string"),
    ("select 'ends in backslash\\", "unterminated string"),
    ("select 'a'' from t", "unterminated string"),
    ('select "unterminated from t', "unterminated quoted identifier"),
    ("select $$unterminated", "unterminated $$ string"),
    ("select 1 /* unterminated", "unterminated block comment"),
    ("select (1", "unbalanced"),
    ("select 1)", "unbalanced"),
    ("select 1) union all (select secret from s", "unbalanced"),
    ("select (1; drop table t)", "inside parentheses"),
    ("DROP TABLE t", "not DROP"),
    ("DELETE FROM t", "not DELETE"),
    ("insert into t select 1", "not INSERT"),
    ("update t set a = 1", "not UPDATE"),
    ("merge into t using s on t.id = s.id when matched then delete", "not MERGE"),
    ("create table x as select 1", "not CREATE"),
    ("/* SELECT */ DROP TABLE t", "not DROP"),
    ("CALL proc()", "not CALL"),
    ("EXECUTE IMMEDIATE 'DROP TABLE t'", "not EXECUTE"),
    ("put file:///tmp/x @st", "not PUT"),
    ("get @st file:///tmp", "not GET"),
    ("copy into t from @st", "not COPY"),
    ("SHOW TABLES", "not SHOW"),
    ("describe table t", "not DESCRIBE"),
    ("begin delete from t; end", "second statement"),
    ("begin select 1 end", "not BEGIN"),
    ("declare x int", "not DECLARE"),
    ("WITH x AS (SELECT 1) DELETE FROM t", "not DELETE"),
    ("with x as (select 1) insert into t select * from x", "not INSERT"),
    ("WITH x AS (SELECT 1) MERGE INTO t USING x ON true WHEN MATCHED THEN DELETE", "not MERGE"),
    ("with x as (select 1) update t set a = 1", "not UPDATE"),
    ("with x as (select 1) (delete from t)", "not DELETE"),
    ("with x as (delete from t) select 1", "not DELETE"),
    ("with x as procedure () returns int language sql as $$ 1 $$ call x()", "WITH clause"),
    ("with x select 1", "WITH clause"),
    ("with select 1", "WITH clause"),
    ("select 1 ->> delete from t", "->>"),
    ("select 1 -/**/>> delete from t", "->>"),
    ("values (1)", "not VALUES"),
    (
        "\u017felect 1",
        "something else",
    ),  # long s + 'elect' upper-cases to 'SELECT', but is no keyword
    ("select 1\x00; drop table t", "NUL"),
    ("(( ))", "found nothing"),
]


def test_the_table_is_big_enough() -> None:
    assert len(ACCEPTED) + len(REFUSED) >= 40


@pytest.mark.parametrize("query", ACCEPTED)
def test_accepted(query: str) -> None:
    statement = check_query(query)
    # The statement comes back without surrounding comments or the trailing semicolon.
    assert statement == statement.strip() and not statement.endswith(";")
    assert check_query(statement) == statement


@pytest.mark.parametrize(("query", "reason"), REFUSED)
def test_refused(query: str, reason: str) -> None:
    with pytest.raises(UnsafeQuery) as err:
        check_query(query)
    assert reason in err.value.reason
    if err.value.offset is not None:
        assert 0 <= err.value.offset <= len(query)


def test_offset_points_at_the_problem() -> None:
    query = "select ';' from t; drop table t"
    with pytest.raises(UnsafeQuery) as err:
        check_query(query)
    assert query[err.value.offset :].startswith("drop")


def test_trailing_comment_and_semicolon_are_dropped() -> None:
    assert check_query("/* c */ select 1 -- x\n; -- y") == "select 1"


SECRET = "sk_live_9f8e7d6c5b4a"  # a secret-looking token that must never be echoed

SECRET_QUERIES = [
    f"select '{SECRET}'; drop table t",
    f"select '{SECRET}",
    f"delete from t where token = '{SECRET}'",
    f"select 1 as {SECRET}$$x; drop table t",
    f'select "{SECRET}',
    f"with {SECRET} as (select 1) delete from t",
    f"{SECRET}",
]


@pytest.mark.parametrize("query", SECRET_QUERIES)
def test_errors_never_echo_the_query(query: str) -> None:
    with pytest.raises(UnsafeQuery) as err:
        check_query(query)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    with pytest.raises(InvalidConfig) as trainer_err:
        subquery(query)
    assert SECRET not in str(trainer_err.value)
    with pytest.raises(InvalidJob) as job_err:
        parse_job(job(query))
    assert SECRET not in str(job_err.value)


def job(query: str, validation_query: str | None = None) -> dict:
    data: dict = {"query": query}
    if validation_query is not None:
        data["validation"] = {"query": validation_query}
    return {
        "apiVersion": "snowtrain.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": {"baseModel": {"uri": "/models/x"}, "data": data},
    }


def test_parse_job_refuses_a_bad_query_naming_the_field() -> None:
    with pytest.raises(InvalidJob) as err:
        parse_job(job("SELECT * FROM t; DROP TABLE t"))
    [problem] = err.value.errors
    assert problem.path == "spec.data.query"
    assert "single SELECT" in problem.reason and "at character 17" in problem.reason


def test_parse_job_checks_the_validation_query_too() -> None:
    with pytest.raises(InvalidJob) as err:
        parse_job(job("select text from t", validation_query="with x as (select 1) delete from t"))
    assert [e.path for e in err.value.errors] == ["spec.data.validation.query"]


def test_parse_job_accepts_a_good_query() -> None:
    parsed = parse_job(job("with x as (select 'a;b' as text) select * from x;"))
    assert parsed.spec.data.query is not None


def test_admission_review_prints_field_and_reason() -> None:
    problems = review("CREATE", job("select 1 as a$$b; drop table x; select $$"), None)
    assert problems == [
        "spec.data.query: '$$' inside a name (it could also open a $$ string) (at character 13)"
    ]


def test_trainer_wraps_the_checked_statement() -> None:
    assert subquery("select 1; -- bye") == "(\nselect 1\n)"
    with pytest.raises(InvalidConfig, match="single SELECT"):
        subquery("select 1; drop table t")


def test_deep_nesting_does_not_recurse() -> None:
    depth = 50_000
    assert check_query("(" * depth + "select 1" + ")" * depth).startswith("(((")
