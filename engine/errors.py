"""Bad-input errors for what the user has to install or point to: an optional package or a model.

Both are ``UserError`` (the CLI prints one line with the install hint and exits 2) and keep the
built-in type that callers and tests already catch:

    try:
        import funasr
    except ImportError:
        raise MissingPackage("Paraformer needs `pip install funasr`") from None
"""
from __future__ import annotations

from manifests.errors import UserError


class MissingPackage(UserError, ImportError):
    """An optional package is not installed; the message says what to install."""


class MissingModel(UserError, FileNotFoundError):
    """A model file or directory the configuration names does not exist or is incomplete; the
    message names it and says how to get one."""
