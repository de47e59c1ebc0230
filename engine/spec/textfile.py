"""Strict UTF-8 reading shared by text sources and speaker transcripts."""
from __future__ import annotations

from pathlib import Path

from engine.spec.errors import SpecError


def read_utf8(path: Path, field: str = "") -> str:
    """Return the text of ``path`` (a leading BOM dropped).

    Raises:
        SpecError: missing file, unreadable file, or bytes that are not UTF-8 (with the offset of
            the first bad byte, so the user can find it with ``xxd -s OFFSET``).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError.at(path, field, "no such file") from None
    except OSError as exc:
        raise SpecError.at(path, field, f"cannot read ({exc.strerror})") from None
    except ValueError:  # a NUL in the path
        raise SpecError.at(path, field, "not a valid path") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError.at(path, field, f"not UTF-8 (bad byte at byte offset {exc.start})") from None
