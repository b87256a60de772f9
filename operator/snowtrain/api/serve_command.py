"""The model server's command line, built in one place.

The operator's serving Deployment, local mode, the test fixtures and the benchmarks all start
``python -m snowtrain.serve``; building its argv here keeps the flag spelling in one place
(the flags themselves are ``snowtrain.serve.settings.ServeSettings``; a test holds the two
together). Pure: the operator image has no server code, only this.
"""

from __future__ import annotations

from collections.abc import Sequence

#: How the server is started (its ``__main__``).
SERVE_MODULE = "snowtrain.serve"

Option = str | int | float | None


def serve_command(
    model_dir: str, *, python: str = "python", extra: Sequence[str] = (), **options: Option
) -> list[str]:
    """``python -m snowtrain.serve --model-dir DIR --some-option VALUE ...``.

    ``options`` are the server's settings by their Python names (``max_batch_size`` becomes
    ``--max-batch-size``), in the order given; None leaves a flag out, so a caller passes
    optional settings without branching. ``extra`` is appended verbatim.
    """
    argv = [python, "-m", SERVE_MODULE, "--model-dir", model_dir]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return [*argv, *extra]
