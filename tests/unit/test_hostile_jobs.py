"""`snowtrain validate` refuses every job of the hostile corpus (tests/hostile_jobs.py) on the
field it names; the real API server with the admission webhook gives the same verdicts
(tests/integration/test_operator_webhook.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from snowtrain.api.validation import InvalidJob, parse_job
from snowtrain.cli.main import main
from tests.hostile_jobs import CASES, Hostile


def test_the_corpus_is_large_and_every_case_says_why() -> None:
    assert len(CASES) >= 60
    assert all(case.why and case.field for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_validate_refuses_it_naming_the_field(
    case: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InvalidJob) as refused:
        parse_job(case.manifest())
    problems = [str(e) for e in refused.value.errors]  # "path: reason"
    assert any(p.startswith(case.field) for p in problems), (case.why, problems)

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(case.manifest()))
    assert main(["validate", str(path)]) != 0
    assert case.field in capsys.readouterr().err


def test_every_case_is_one_change_from_a_valid_job() -> None:
    """The base the patches apply to is valid, so each refusal is the patch's doing."""
    for kind in ("FineTuneJob", "PretrainJob"):
        parse_job(Hostile("base", "", {}, "", kind=kind, name="valid").manifest())
