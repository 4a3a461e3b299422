"""Error types raised at the package's boundaries.

Every error that comes from a user's file names the file, the line (1-based, when the
problem is on a line) and the offending value, so that the message alone says what to fix.
"""

from __future__ import annotations

import os


class AtacformerError(Exception):
    """Base class of atacformer's own errors."""


class InputFormatError(AtacformerError, ValueError):
    """A user file does not have the expected format.

    Parameters
    ----------
    path
        The file being read.
    message
        What is wrong and what was expected.
    line
        1-based line number in the (decompressed) file, when known.
    value
        The offending value, when there is one.
    """

    def __init__(self, path, message: str, line: int | None = None, value=None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.value = value
        where = f"{self.path}" if self.path is not None else "<input>"
        if line is not None:
            where += f", line {line}"
        text = f"{where}: {message}"
        if value is not None:
            text += f" (got {value!r})"
        super().__init__(text)


class InputMissingError(InputFormatError, FileNotFoundError):
    """An input file does not exist (both an :class:`InputFormatError` and a
    :class:`FileNotFoundError`)."""


class GenomeMismatchError(InputFormatError):
    """An input's chromosomes or coordinates do not fit the chosen genome.

    Same arguments as :class:`InputFormatError` (``path`` may be ``None``).
    """


class VocabularyMismatchError(AtacformerError, ValueError):
    """A model, corpus or matrix was built with another vocabulary."""


class OutputError(AtacformerError, ValueError):
    """An output path cannot be written: it exists (without ``--overwrite``), it is an input,
    or it holds files the command did not make."""
