"""The admin's box: a job's spec.image must come from an allowed repository."""

from __future__ import annotations

import pytest

from snowtrain.api.validation import parse_job
from snowtrain.operator.policy import policy_errors, repository_of
from snowtrain.operator.settings import OperatorSettings
from snowtrain.operator.webhook import review
from tests.hostile_jobs import Hostile

TRAINER = "registry.example:5000/ml/snowtrain-trainer:0.1.0"


def _job(image: str | None) -> dict:
    patch = {"spec": {"image": image}} if image else {}
    return Hostile("policy", "", patch, "", name="policy").manifest()


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("trainer", "trainer"),
        ("ghcr.io/org/trainer:1.0", "ghcr.io/org/trainer"),
        ("registry.example:5000/ml/t:0.1@sha256:abc", "registry.example:5000/ml/t"),
        ("registry.example:5000/ml/t@sha256:abc", "registry.example:5000/ml/t"),
    ],
)
def test_repository_of_an_image_reference(image: str, repository: str) -> None:
    assert repository_of(image) == repository


def test_by_default_only_the_trainer_images_repository_is_allowed() -> None:
    settings = OperatorSettings(trainer_image=TRAINER)
    ok = parse_job(_job("registry.example:5000/ml/snowtrain-trainer:0.2.0-cuda"))
    assert policy_errors(ok, settings) == []
    assert policy_errors(parse_job(_job(None)), settings) == []
    (err,) = policy_errors(parse_job(_job("docker.io/attacker/miner:latest")), settings)
    assert err.path == "spec.image"
    assert "docker.io/attacker/miner" in err.reason and "allowed" in err.reason
    # A repository that merely starts like the allowed one is another repository.
    assert policy_errors(parse_job(_job(TRAINER.replace("trainer:", "trainer-evil:"))), settings)


def test_an_admin_can_allow_more_and_a_trailing_star_allows_a_whole_registry_path() -> None:
    settings = OperatorSettings(
        trainer_image=TRAINER, allowed_image_repositories="ghcr.io/team-a/*, ghcr.io/x/exact"
    )
    assert policy_errors(parse_job(_job("ghcr.io/team-a/custom/trainer:1")), settings) == []
    assert policy_errors(parse_job(_job("ghcr.io/x/exact:2")), settings) == []
    assert policy_errors(parse_job(_job("ghcr.io/x/exact-not:2")), settings)
    # The configured list replaces the default.
    assert policy_errors(parse_job(_job(TRAINER)), settings)


def test_the_webhook_refuses_a_foreign_image_naming_the_field() -> None:
    settings = OperatorSettings(trainer_image=TRAINER)
    problems = review("CREATE", _job("docker.io/attacker/miner:latest"), None, settings)
    assert problems and problems[0].startswith("spec.image: repository")
    assert review("CREATE", _job(None), None, settings) == []


def _with_snowflake(**fields: str) -> dict:
    return Hostile("policy", "", {"spec": {"data": {"snowflake": fields}}}, "", name="p").manifest()


def test_a_job_cannot_redirect_the_secrets_account_or_user() -> None:
    settings = OperatorSettings(trainer_image=TRAINER)
    job = parse_job(_with_snowflake(account="attacker-account", user="root"))
    paths = [e.path for e in policy_errors(job, settings)]
    assert paths == ["spec.data.snowflake.account", "spec.data.snowflake.user"]


def test_a_role_only_when_the_admin_allows_it() -> None:
    strict = OperatorSettings(trainer_image=TRAINER)
    (err,) = policy_errors(parse_job(_with_snowflake(role="ACCOUNTADMIN")), strict)
    assert err.path == "spec.data.snowflake.role" and "none here" in err.reason
    allowing = OperatorSettings(
        trainer_image=TRAINER, allowed_snowflake_roles="ml_reader, ML_WRITER"
    )
    assert policy_errors(parse_job(_with_snowflake(role="ML_READER")), allowing) == []
    assert policy_errors(parse_job(_with_snowflake(role="ACCOUNTADMIN")), allowing)
    # Snowflake folds unquoted names to upper case; a quoted name is exactly itself, so
    # "ml_writer" is another role than the allowed ML_WRITER.
    assert policy_errors(parse_job(_with_snowflake(role="ml_writer")), allowing) == []
    assert policy_errors(parse_job(_with_snowflake(role='"ML_WRITER"')), allowing) == []
    assert policy_errors(parse_job(_with_snowflake(role='"ml_writer"')), allowing)


def test_an_admin_can_require_a_token_on_every_model_server() -> None:
    served = Hostile("served", "", {"spec": {"serving": {"enabled": True}}}, "").manifest()
    assert policy_errors(parse_job(served), OperatorSettings(trainer_image=TRAINER)) == []
    strict = OperatorSettings(trainer_image=TRAINER, serving_auth_required=True)
    (err,) = policy_errors(parse_job(served), strict)
    assert err.path == "spec.serving.auth" and "serving.requireAuth" in err.reason
    with_token = Hostile(
        "token", "", {"spec": {"serving": {"auth": {"secretRef": {"name": "t"}}}}}, ""
    ).manifest()
    assert policy_errors(parse_job(with_token), strict) == []
    unserved = Hostile("off", "", {"spec": {"serving": {"enabled": False}}}, "").manifest()
    assert policy_errors(parse_job(unserved), strict) == []
