"""The data probe of a TrainingSchedule: has the source changed since the last run?

A schedule with a data trigger does not retrain on every tick: before each run it starts
``python -m snowtrain.probe --config FILE`` (a ``ProbeConfig``, ``snowtrain.api.probe_config``)
in a small pod. The probe asks Snowflake one cheap question -- the source's row count and the
newest value of the trigger's column, which Snowflake answers for a table from metadata --
and reports a fingerprint of the answer in its termination message
(``TrainerSummary.probe``). The operator starts the run only when that fingerprint differs
from the last successful run's, so an unchanged table costs one metadata query, not a
training job. ``run.py`` speaks the trainer's protocol (a ``done`` event on stdout, the
summary in the termination message, the trainer's exit codes), so the operator reads a probe
pod as it reads a training pod.
"""
