"""Keep Python's garbage collector off the objects that outlive ingest while it runs.

Why: every tokenized batch creates one GC-tracked ``Encoding`` per row, so ingest drives the
cyclic collector into frequent collections, and each full collection walks every tracked
object in the process: torch, transformers, pyarrow, the loaded base model (hundreds of
thousands of objects with the imports alone). That walk took a large share of the tokenizing
CPU (in ``perf``: ``gc_collect_main`` + ``visit_decref`` + ``visit_reachable``); freezing
makes ingest markedly faster (README: "The trainer contract"; ``bench/bench_ingest.py``).

``gc.freeze()`` moves the objects alive at the start into a permanent generation that
collections skip; the objects ingest creates are still collected as usual, so cycles it makes
are still reclaimed. On the way out the frozen objects are handed back to the collector.
Disabling the collector instead would also stop it reclaiming the connector's cycles during
an ingest that can run for hours.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0


@contextlib.contextmanager
def frozen_long_lived_objects() -> Iterator[None]:
    """While the block runs, collections skip the objects alive when it started.

    Re-entrant and thread-safe: the objects are unfrozen when the outermost block exits.
    """
    global _depth
    with _lock:
        if _depth == 0:
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
