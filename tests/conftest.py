"""Test-suite wiring: every module in tests/fixtures is a pytest plugin.

Each fixture module owns one real dependency (the local cluster, the Snowflake emulator,
tiny models), so adding one never means editing this file.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Stricter than production, never looser: a trainer event carrying a field the readers do not
# declare fails the run here (users' runs log it and go on; see trainer/progress.py). Every
# trainer a test starts, in process or as a child, inherits it.
os.environ.setdefault("SNOWTRAIN_STRICT_EVENTS", "1")

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)
