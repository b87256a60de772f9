"""snowtrain's API: the FineTuneJob and PretrainJob models, CRD generation, validation and the
trainer config. Depends on pydantic and PyYAML only, so every component can import it."""

from .kinds import API_VERSION, GROUP, VERSION, AnyJob, FineTuneJob, PretrainJob
from .trainer_config import TrainerConfig, render_trainer_config
from .validation import FieldError, InvalidJob, parse_job

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "AnyJob",
    "FieldError",
    "FineTuneJob",
    "InvalidJob",
    "PretrainJob",
    "TrainerConfig",
    "parse_job",
    "render_trainer_config",
]
