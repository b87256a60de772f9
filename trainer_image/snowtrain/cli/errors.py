"""The one exception type the CLI shows as a message instead of a traceback."""

from __future__ import annotations

#: Exit code for a mistake in the command line or the YAML (argparse uses 2 as well).
USAGE_EXIT_CODE = 2


class UserError(Exception):
    """Something the user can fix (a bad field, a missing file); printed without a traceback."""

    def __init__(self, message: str, exit_code: int = USAGE_EXIT_CODE):
        super().__init__(message)
        self.exit_code = exit_code
