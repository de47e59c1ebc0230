"""The one error type of spec loading and expansion.

Every message is one line that names the file and the field, so the CLI can print it as is:

    >>> str(SpecError.at("spec.yaml", "count", "must be an integer >= 1, got 0"))
    'spec.yaml: count: must be an integer >= 1, got 0'
"""
from __future__ import annotations

from manifests.errors import UserError


class SpecError(UserError):
    """Bad generation spec, text source or speaker folder (one line: file, field, problem)."""

    @classmethod
    def at(cls, file, field: str, problem: str) -> "SpecError":
        """Build the error for ``problem`` found at ``field`` (e.g. ``texts[1].file``) of ``file``."""
        where = f"{_printable(file)}: {_printable(field)}: " if field else f"{_printable(file)}: "
        # One line only: nested messages (audio decoders, YAML) may carry newlines.
        return cls(where + " ".join(str(problem).split()))


def _printable(name) -> str:
    """``name`` as is, or escaped where it holds a newline or another control character (a YAML
    key may be any string)."""
    name = str(name)
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
