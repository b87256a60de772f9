"""The README is the user's entry point: its generated parts and commands must stay true."""

from __future__ import annotations

from pathlib import Path

from snowtrain.api.reference import splice

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_cr_reference_matches_the_models():
    assert splice(README) == README, "README CR reference is stale: run `make docs`"


def test_ci_runs_the_readme_test_command():
    assert "make test " in README or "make test\n" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
