"""``snowtrain``: run a FineTuneJob/PretrainJob YAML locally, and small maintenance commands.

    snowtrain run FILE.yaml      validate, train, export, serve (local mode)
    snowtrain run SCHEDULE.yaml --once
                                 one tick of a TrainingSchedule: probe, train, gate, serve
    snowtrain validate FILE...   the webhook's validation, on files
    snowtrain render FILE        the trainer config local mode would run
    snowtrain crds [--out DIR]   the CRDs generated from the API models

User mistakes (a bad field, a missing file, an impossible option) print one clear message and
exit 2, never a traceback; a failed training exits with the trainer's own code (README: "The trainer contract").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from .errors import UserError


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="train (and serve) a FineTuneJob or PretrainJob YAML, run a BatchPrediction "
        "YAML, or one tick of a TrainingSchedule YAML (--once), on this machine",
        description=(
            "Validate the YAML with the API models, render the same trainer config the operator "
            "would, train, export, then serve the model. Without Snowflake credentials "
            "(SNOWFLAKE_* environment or ~/.snowflake/connections.toml) an embedded emulator "
            "seeded with example tables stands in for Snowflake."
        ),
    )
    p.add_argument("file", type=Path, help="the job YAML (as for kubectl apply)")
    p.add_argument(
        "--output",
        type=Path,
        help="run directory (default ./snowtrain-runs/<kind>/<name>); for a TrainingSchedule "
        "the schedule's directory: its state.json and one directory per run",
    )
    p.add_argument(
        "--once", action="store_true",
        help="TrainingSchedule: run one tick now (probe the data, train, apply the gate, "
        "update the model in service); successive runs behave as successive ticks",
    )  # fmt: skip
    p.add_argument("--max-steps", type=int, help="override spec.training.maxSteps")
    serve = p.add_mutually_exclusive_group()
    serve.add_argument(
        "--serve", dest="serve", action="store_true", default=None,
        help="serve the model after training (default: as spec.serving says)",
    )  # fmt: skip
    serve.add_argument("--no-serve", dest="serve", action="store_false", help="do not serve")
    p.add_argument("--port", type=int, help="serving port (default spec.serving.port or 8080)")
    p.add_argument(
        "--demo", action="store_true",
        help="send one prediction to the served model, print it and exit",
    )  # fmt: skip
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", dest="fresh", action="store_false", default=False,
        help="continue from the run directory's checkpoints (default)",
    )  # fmt: skip
    resume.add_argument(
        "--fresh", dest="fresh", action="store_true",
        help="delete the run directory's checkpoints and model first",
    )  # fmt: skip
    p.add_argument(
        "--snowflake", choices=["auto", "embedded", "env", "connection"], default="auto",
        help="auto (default): SNOWFLAKE_* env, else connections.toml, else the embedded "
        "emulator; embedded: always the emulator; env / connection: insist on those",
    )  # fmt: skip
    p.add_argument(
        "--connection", metavar="NAME",
        help="connection name in connections.toml (implies --snowflake connection)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snowtrain", description="Fine-tune and pretrain transformers on Snowflake data."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    p = sub.add_parser("validate", help="validate job YAML files as the admission webhook does")
    p.add_argument("files", type=Path, nargs="+")
    p = sub.add_parser("render", help="print the trainer config for a job YAML (debugging)")
    p.add_argument("file", type=Path)
    p.add_argument("--output", type=Path, help="run directory, as for run")
    p.add_argument("--max-steps", type=int, help="override spec.training.maxSteps")
    p = sub.add_parser("crds", help="print or write the CRDs generated from the API models")
    p.add_argument("--out", type=Path, help="write one file per CRD into this directory")
    return parser


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from .manifest import load_documents, validate_documents

    failures = []
    for path in args.files:
        try:
            jobs = validate_documents(path, load_documents(path))
        except UserError as exc:
            failures.append(str(exc))
            continue
        for job in jobs:
            console.print(f"{path}: {job.kind} {job.metadata.name or ''} is valid", markup=False)
    if failures:
        raise UserError("\n".join(failures))
    return 0


def cmd_render(args: argparse.Namespace, console: Console) -> int:
    from .manifest import load_job
    from .plan import plan_run

    plan = plan_run(
        load_job(args.file), yaml_path=args.file, output=args.output, max_steps=args.max_steps
    )
    print(plan.config.dumps())
    return 0


def cmd_crds(args: argparse.Namespace, console: Console) -> int:
    from snowtrain.api import crd

    if args.out is None:
        print("---\n".join(crd.render_all().values()), end="")
        return 0
    for path in crd.write([args.out]):
        console.print(f"wrote {path}", markup=False)
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from snowtrain.api.batch import BatchPrediction
    from snowtrain.api.schedule import TrainingSchedule

    from .local_run import LocalRun
    from .manifest import load_resource

    resource = load_resource(args.file)
    if isinstance(resource, TrainingSchedule):
        if not args.once:
            # No operator keeps the clock here; a tick has to be asked for (e.g. from cron).
            raise UserError(
                f"{args.file}: TrainingSchedule {resource.metadata.name} runs on the operator's "
                "clock; locally, run one tick now with --once "
                f"(snowtrain run {args.file} --once), as often as you like"
            )
        from .local_schedule import LocalSchedule

        return LocalSchedule(args, console, resource).run()
    if args.once:
        raise UserError(
            f"--once runs one tick of a TrainingSchedule; {args.file} is a {resource.kind} "
            "(drop --once)"
        )
    if isinstance(resource, BatchPrediction):
        from .local_predict import LocalPrediction

        return LocalPrediction(args, console, resource).run()
    return LocalRun(args, console).run()


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "render": cmd_render, "crds": cmd_crds}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return COMMANDS[args.command](args, console)
    except UserError as exc:
        errors.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted", markup=False)
        return 130
    except BrokenPipeError:
        # `snowtrain render FILE | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
