"""Per-request failures of a batch: the others still come back."""
from __future__ import annotations

from engine.lm.base import Generation


class RequestError(RuntimeError):
    """Some requests of a ``generate`` call failed; the rest succeeded.

    errors: request index -> one-line reason.
    generations: one entry per prompt, None where the request failed.
    kinds: request index -> a short name of the failure for counting (``http 500``, ``timeout``,
        ``malformed response``); ``generation failed`` where the engine names none.
    """

    def __init__(self, errors: dict[int, str], generations: list[Generation | None],
                 kinds: dict[int, str] | None = None):
        self.errors = dict(sorted(errors.items()))
        self.generations = generations
        self.kinds = {i: (kinds or {}).get(i, "generation failed") for i in self.errors}
        first = next(iter(self.errors.items()))
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"request {first[0]} failed: {first[1]}{more}")
