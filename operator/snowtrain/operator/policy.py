"""The admin's box for what a job author may choose: the image and the Snowflake identity.

A job author is not a cluster admin. ``spec.image`` picks the container every training and
serving pod of the job runs, with the job's Snowflake credentials mounted: any image would let
whoever may create a job run any code with them. The chart's values name the repositories
jobs may use (default: the repository of the configured trainer image).

On a cluster the Secret is the only source of the Snowflake account and user (the trainer
also ignores the environment for them, and for host, port and protocol), and a job may ask
for a role only when the chart's ``snowflake.allowedRoles`` names it (default: none, the
Secret's role): a job cannot turn the admin's credentials into ``ACCOUNTADMIN``.

A BatchPrediction's pod is boxed in the same way (its image, its Snowflake identity, its
pod additions). The webhook refuses what the policy does not allow at admission, and the operator fails such
a job (InvalidSpec) where no webhook runs.

Pure functions over the typed job and the operator's settings.
"""

from __future__ import annotations

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.kinds import AnyJob
from snowtrain.api.pod import ADMIN_VOLUME_KINDS
from snowtrain.api.schedule import TrainingSchedule
from snowtrain.api.validation import FieldError, template_job

from .settings import OperatorSettings


def repository_of(image: str) -> str:
    """``registry/team/trainer:1.2@sha256:...`` -> ``registry/team/trainer``."""
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    name = last.split(":", 1)[0]
    return f"{head}/{name}" if head else name


def allowed_repositories(settings: OperatorSettings) -> list[str]:
    """The configured allow-list, or the trainer image's own repository."""
    configured = [r.strip() for r in settings.allowed_image_repositories.split(",") if r.strip()]
    return configured or [repository_of(settings.trainer_image)]


def _allows(entry: str, repository: str) -> bool:
    """An entry is a repository (exact) or, ending in ``/*``, every repository below it."""
    if entry.endswith("/*"):
        return repository.startswith(entry[:-1])
    return repository == entry


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def image_errors(job: AnyJob | BatchPrediction, settings: OperatorSettings) -> list[FieldError]:
    image = job.spec.image
    if not image:
        return []
    allowed = allowed_repositories(settings)
    if any(_allows(entry, repository_of(image)) for entry in allowed):
        return []
    return [
        FieldError(
            "spec.image",
            f"repository {repository_of(image)!r} is not allowed here; allowed: "
            f"{', '.join(allowed)} (the chart's trainerImage.allowedRepositories)",
        )
    ]


def _role_key(role: str) -> str:
    """Snowflake's identity of a role name: unquoted names fold to upper case, a quoted one
    is its exact text (``"ml_writer"`` is another role than ML_WRITER)."""
    role = role.strip()
    if len(role) >= 2 and role[0] == role[-1] == '"':
        return role[1:-1].replace('""', '"')
    return role.upper()


def credential_errors(
    job: AnyJob | BatchPrediction, settings: OperatorSettings
) -> list[FieldError]:
    if isinstance(job, BatchPrediction):
        snowflake, path = job.spec.input.snowflake, "spec.input.snowflake"
    else:
        snowflake, path = job.spec.data.snowflake, "spec.data.snowflake"
    errors = [
        FieldError(
            f"{path}.{name}",
            "on a cluster it comes from the Secret (secretRef) alone; remove it",
        )
        for name in ("account", "user")
        if getattr(snowflake, name)
    ]
    allowed = {_role_key(r) for r in _csv(settings.allowed_snowflake_roles)}
    if snowflake.role and _role_key(snowflake.role) not in allowed:
        errors.append(
            FieldError(
                f"{path}.role",
                "a job may choose only a role the chart's snowflake.allowedRoles names "
                f"({', '.join(sorted(allowed)) or 'none here'}); leave it out to use the "
                "Secret's role",
            )
        )
    return errors


def pod_errors(job: AnyJob | BatchPrediction, settings: OperatorSettings) -> list[FieldError]:
    """Service accounts and volume kinds beyond the defaults, only where the admin allows."""
    accounts = set(_csv(settings.allowed_service_accounts))
    kinds = set(_csv(settings.allowed_volume_kinds))
    overrides = [("spec.podTemplate", job.spec.pod_template)]
    if not isinstance(job, BatchPrediction) and job.spec.serving is not None:
        overrides.append(("spec.serving.podTemplate", job.spec.serving.pod_template))
    errors = []
    for path, pod in overrides:
        if pod is None or pod.spec is None:
            continue
        account = pod.spec.service_account_name
        if account and account not in accounts:
            errors.append(
                FieldError(
                    f"{path}.spec.serviceAccountName",
                    f"not allowed here (the chart's podOverrides.serviceAccounts: "
                    f"{', '.join(sorted(accounts)) or 'none'})",
                )
            )
        for i, volume in enumerate(pod.spec.volumes):
            for kind in volume.kinds():
                if kind in ADMIN_VOLUME_KINDS and kind not in kinds:
                    errors.append(
                        FieldError(
                            f"{path}.spec.volumes[{i}].{kind}",
                            "this volume kind needs the chart's podOverrides.volumeKinds",
                        )
                    )
    return errors


def serving_errors(job: AnyJob, settings: OperatorSettings) -> list[FieldError]:
    """A model server without a token, where the installation requires one."""
    serving = job.spec.serving
    if settings.serving_auth_required and serving and serving.enabled and not serving.auth:
        return [
            FieldError(
                "spec.serving.auth",
                "this installation requires a bearer token on every model server (the "
                "chart's serving.requireAuth); set auth.secretRef to a Secret key holding it",
            )
        ]
    return []


def policy_errors(
    job: AnyJob | BatchPrediction | TrainingSchedule, settings: OperatorSettings
) -> list[FieldError]:
    """What this installation does not allow job authors to choose (a BatchPrediction's pod
    is boxed in as a training pod is: image, Snowflake identity, pod additions). A
    TrainingSchedule is held to what each of its runs and its endpoint would be."""
    if isinstance(job, TrainingSchedule):
        return [
            e if e.path.startswith("spec.serving") else FieldError(f"spec.jobTemplate.{e.path}", e.reason)
            for e in policy_errors(template_job(job), settings)
        ]  # fmt: skip
    errors = image_errors(job, settings) + credential_errors(job, settings)
    errors += pod_errors(job, settings)
    if not isinstance(job, BatchPrediction):
        errors += serving_errors(job, settings)
    return errors
