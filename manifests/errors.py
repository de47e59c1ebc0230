"""The project's bad-input error: what the user gave (a file, a flag, a config value, a run
directory) cannot be used.

The CLI prints a ``UserError`` as one line and exits 2; any other exception is a bug and shows its
traceback (exit 1). Each area has its subclass (``SpecError``, ``RunError``, ``ConfigError``,
``DataError``, ``InstructionError`` ...), so callers can catch one area or all bad input. It is a
``ValueError`` as well, so code written against the older plain ValueErrors keeps working.

    >>> raise UserError("runs/x: no such run directory")     # doctest: +SKIP
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message is one line that names the file, flag or field and the problem."""
