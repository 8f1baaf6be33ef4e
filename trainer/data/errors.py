"""Errors raised while reading training data."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file does not have the expected format.

    The message names the file, the 1-based line number and the reason, as ``path:line: reason``, so that
    a malformed row can be found and fixed without a debugger; line 0 means the file (or directory) as a
    whole: missing, or inconsistent with a companion file. Readers raise it rather than skip the row: a silently
    dropped event would change what a model learns without anyone noticing.
    """

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason
