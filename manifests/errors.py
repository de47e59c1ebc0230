"""The project's bad-input error: what the user gave (a file, a flag, a config value, a run
directory) cannot be used.

The CLI prints a ``UserError`` as one line and exits 2; any other exception is a bug and shows its
traceback (exit 1). Each area has its subclass (``SpecError``, ``RunError``, ``ConfigError``,
``DataError``, ``InstructionError`` ...), so callers can catch one area or all bad input. It is a
``ValueError`` as well, so code written against the older plain ValueErrors keeps working.

    >>> raise UserError("runs/x: no such run directory")     # doctest: +SKIP
"""
from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """Bad input: the message is one line that names the file, flag or field and the problem."""


# Where a write fails because of the machine, not the data: the user frees space or fixes the
# directory and reruns, which resumes from the last commit.
STORAGE_ERRNOS = {errno.ENOSPC: "free space, then rerun the same command (it resumes from the last commit)",
                  errno.EDQUOT: "free space within the quota, then rerun the same command (it resumes)",
                  errno.EROFS: "the file system is read-only; write elsewhere (another --out) or remount it",
                  errno.EACCES: "permission denied; fix the directory's permissions or write elsewhere",
                  errno.EPERM: "operation not permitted; fix the directory's permissions or write elsewhere"}


class StorageError(UserError):
    """A write failed for want of space or permission (disk full, quota, read-only, denied)."""


def storage_error(exc: BaseException, path=None) -> StorageError | None:
    """The one-line :class:`StorageError` for an OSError whose errno is a storage problem (the
    file ``path``, else the one the error names), or None for any other error.

        >>> str(storage_error(OSError(errno.ENOSPC, "No space left on device"), "RUN/shards/x.tar"))
        'RUN/shards/x.tar: no space left on device; free space, then rerun the same command (it resumes from the last commit)'
    """
    if isinstance(exc, StorageError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    where = path or exc.filename or "output"
    return StorageError(f"{where}: {os.strerror(exc.errno).lower()}; {STORAGE_ERRNOS[exc.errno]}")
