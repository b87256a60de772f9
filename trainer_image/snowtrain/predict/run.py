"""The predictor program: config in, rows into the output table, one summary out.

It speaks the trainer's protocol (README: "The trainer contract"): JSON events on stdout
(``rows`` after each committed chunk, ``done`` at the end), the summary in the termination
message, and the trainer's exit codes, so a prediction pod is read exactly as a training pod
is. The order of work: credentials; the input check (NULL or shared keys fail here, before a
model is loaded); the model; the output and staging tables (an output table without the
run's columns fails here); then chunks, each predicted while the one before it is committed
on a second thread; then the single write to the output table.

A SIGTERM (preemption, a drained node) ends the pod at once: every committed chunk is in the
staging table, and the next pod of the run goes on after the last one.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING

import pyarrow as pa

from snowtrain.api.events import PredictionCounts, TrainerSummary, now_iso
from snowtrain.api.predictor_config import PredictorConfig
from snowtrain.api.trainer_config import ConfigFileError
from snowtrain.trainer.data.connection import LazyConnection
from snowtrain.trainer.data.credentials import load_credentials
from snowtrain.trainer.errors import InvalidConfig, Preempted
from snowtrain.trainer.progress import Reporter, conclude, failure_of
from snowtrain.trainer.redact import Redactor, setup_logging

from .sink import ROW_COLUMN, PredictionSink
from .source import TEXT_ALIAS, PredictionSource

if TYPE_CHECKING:
    from .infer import Predictor

log = logging.getLogger("snowtrain.predict")


class StopGuard:
    """SIGTERM (preemption, a drained node) and SIGINT, by phase.

    Before predicting there is nothing to keep: the signal stops the program at once. While
    predicting it is only noted, and the loop stops at the next batch boundary (``check``):
    an exception raised from a signal handler lands in whatever library code runs, whose own
    error handling may swallow it (the classifier's one-row-at-a-time fallback did, and the
    pod ran on). During the final write it is noted and the one statement finishes.
    """

    def __init__(self) -> None:
        self.phase = "prepare"
        self.requested: str | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name
        if self.phase == "prepare":
            raise Preempted(f"{self.requested} received before predicting")
        log.warning(
            "%s received during %s; stopping at the next safe point", self.requested, self.phase
        )

    def check(self) -> None:
        """Raise ``Preempted`` when a signal asked to stop (called between batches)."""
        if self.requested and self.phase == "predict":
            raise Preempted(f"{self.requested} received; committed chunks are kept")


def run(config: PredictorConfig) -> int:
    """Predict as configured; return the process exit code (``snowtrain.api.events.ExitCode``)."""
    redactor = setup_logging()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    guard = StopGuard()
    guard.install()
    reporter = Reporter(config.progress.interval_seconds, redactor=redactor)
    counts = PredictionCounts(
        output_table=config.output.table, mode=config.output.mode, run_id=config.run_id
    )
    reason: str | None = None
    message: str | None = None
    exit_code = 0
    try:
        _predict(config, reporter, redactor, counts, guard)
    except Exception as exc:
        reason, message, exit_code = failure_of(exc)
    finally:
        summary = TrainerSummary.of_exit(
            exit_code,
            reason=reason,
            message=redactor(message) if message else None,
            predictions=counts,
        )
        conclude(summary, redactor, reporter)
    return exit_code


def _predict(
    config: PredictorConfig,
    reporter: Reporter,
    redactor: Redactor,
    counts: PredictionCounts,
    guard: StopGuard,
) -> None:
    from .infer import Predictor

    credentials = load_credentials(config.input.snowflake)
    redactor.add(credentials.secret_values())
    conn = LazyConnection(config.input.snowflake, credentials)
    try:
        source = PredictionSource(config.input, conn)
        total = source.check()
        counts.rows_total = total
        log.info("%d rows to predict from %s", total, config.input.table or "the query")
        predictor = Predictor(
            config.model_dir, batch_size=config.batch_size, generation=config.generation
        )
        sink = PredictionSink(
            conn,
            config.output,
            run_id=config.run_id,
            model_name=config.model_name,
            task=predictor.task,
            source=source,
            retries=config.input.snowflake.retries,
        )
        done = sink.prepare()
        if sink.written():
            log.info("this run's rows are already in %s; nothing left to do", config.output.table)
        else:
            guard.phase = "predict"
            done = _stage_all(config, source, sink, predictor, reporter, counts, total, done, guard)
            guard.phase = "write"
            sink.verify(total)
            sink.finalize()
            log.info("wrote %d rows to %s (%s)", total, config.output.table, config.output.mode)
        sink.drop_staging()
        counts.rows_done = total
        counts.failed_rows = predictor.failed_rows
    finally:
        conn.close()


def _stage_all(
    config: PredictorConfig,
    source: PredictionSource,
    sink: PredictionSink,
    predictor: Predictor,
    reporter: Reporter,
    counts: PredictionCounts,
    total: int,
    done: int,
    guard: StopGuard,
) -> int:
    """Predict and stage every row from ``done`` on; return the rows staged.

    A chunk is predicted while the one before it is committed (one commit in flight, in
    order); each commit reports the rows done as it lands."""
    resumed = done
    if done:
        log.info("resuming: %d of %d rows were committed by an earlier pod", done, total)
        tables = _resume_point(source, sink, done, config.input.batch_rows)
        if tables is None:
            resumed = done = 0
    if not done:
        tables = source.batches(0, config.input.batch_rows)[1]
    counts.rows_done, counts.resumed_from_row = done, resumed
    started = time.monotonic()
    reporter.event(
        "rows", rows_done=done, rows_total=total, resumed_from_row=resumed, time=now_iso()
    )

    def commit(staged: pa.Table, end: int) -> None:
        sink.commit(staged)
        _report(reporter, counts, end, total, resumed, started)

    with ThreadPoolExecutor(1, thread_name_prefix="snowtrain-commit") as committer:
        pending: Future[None] | None = None
        position = done
        for chunk in _chunks(tables, config.output.commit_rows):
            staged = _answer(chunk, predictor, position, guard.check)
            position += chunk.num_rows
            if pending is not None:
                pending.result()  # commits stay in order: one in flight
            pending = committer.submit(commit, staged, position)
        if pending is not None:
            pending.result()
    _report(reporter, counts, position, total, resumed, started, force=True)
    return position


def _resume_point(
    source: PredictionSource, sink: PredictionSink, done: int, batch_rows: int
) -> Iterator[pa.Table] | None:
    """The input from row ``done`` on, or None when it changed since the rows before it were
    staged (the row at ``done - 1`` no longer has the keys staged there): then the staged
    rows are dropped and the run starts over (the output table has not changed yet)."""
    _total, tables = source.batches(done - 1, batch_rows)
    first = next(tables, None)
    staged = sink.staged_keys(done - 1)
    now = None if first is None else tuple(first.column(k)[0].as_py() for k in source.keys)
    if first is None or staged is None or tuple(staged) != now:
        log.warning("the input changed since this run's first rows were staged; starting over")
        sink.restart()
        return None

    def rest() -> Iterator[pa.Table]:
        if first.num_rows > 1:
            yield first.slice(1)
        yield from tables

    return rest()


def _chunks(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The input re-cut into chunks of ``rows`` rows (the last may be shorter)."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        held.append(table)
        count += table.num_rows
        while count >= rows:
            whole = pa.concat_tables(held)
            yield whole.slice(0, rows)
            rest = whole.slice(rows)
            held, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pa.concat_tables(held)


def _answer(
    chunk: pa.Table, predictor: Predictor, first_row: int, check: Callable[[], None]
) -> pa.Table:
    """The chunk's keys, the model's answers, and each row's position in the input."""
    texts = chunk.column(TEXT_ALIAS).to_pylist()
    answers = predictor.predict(texts, first_row, check)
    staged = chunk.drop_columns([TEXT_ALIAS])
    for name, values in answers.items():
        staged = staged.append_column(name, values)
    rows = pa.array(range(first_row, first_row + chunk.num_rows), pa.int64())
    return staged.append_column(ROW_COLUMN, rows)


def _report(
    reporter: Reporter,
    counts: PredictionCounts,
    done: int,
    total: int,
    resumed: int,
    started: float,
    *,
    force: bool = False,
) -> None:
    counts.rows_done = done
    if not (force or reporter.due()):
        return
    elapsed = time.monotonic() - started
    rate = (done - resumed) / elapsed if elapsed > 0 else None
    eta = (total - done) / rate if rate else None
    reporter.periodic(
        "rows",
        rows_done=done,
        rows_total=total,
        resumed_from_row=resumed,
        rows_per_second=round(rate, 1) if rate else None,
        eta_seconds=round(eta, 1) if eta is not None else None,
        force=force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snowtrain.predict")
    parser.add_argument("--config", required=True, help="predictor config (JSON or YAML)")
    args = parser.parse_args(argv)
    try:
        config = PredictorConfig.load(args.config)
    except (ConfigFileError, OSError) as exc:
        print(f"invalid predictor config: {exc}", file=sys.stderr)
        return int(InvalidConfig.exit_code)
    return run(config)
