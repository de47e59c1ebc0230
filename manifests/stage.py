"""The stage protocol: what teachers, codecs and filters have in common.

A stage maps a batch of records (dict rows: the task fields of :mod:`manifests.record` plus what
earlier stages added) to the same records, in order, with columns added::

    stage.setup()                       # once per worker: load models
    records = stage.process(records)    # e.g. + tokens, audio, cer, accepted, reject_reason

A stage declares the resources one instance needs (``resources``) and how many records one call
should get (``batch_size``); it knows nothing of Ray or of the run directory. One generic worker
(``pipelines.actor_pool.StageWorker``) runs any list of stages on a Ray actor pool, and the same
list runs in-process with :func:`run_stages`. A stage never raises for one bad record: it marks
that record (``error`` or ``accepted``/``reject_reason``) and goes on.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

DEFAULT_RESOURCES = {"num_cpus": 1, "num_gpus": 0}


class Stage(ABC):
    """One step of a job. Subclasses set ``name``, ``resources`` and ``batch_size`` and implement
    :meth:`process`; :meth:`setup` is optional."""

    name: str = "stage"
    resources: dict = DEFAULT_RESOURCES
    batch_size: int = 4

    def setup(self) -> None:
        """Load what the stage needs (models, weights). Called once per worker before the first
        batch; raises a ``UserError`` with an install hint when a package or model is missing."""

    @abstractmethod
    def process(self, records: list[dict]) -> list[dict]:
        """The same records, in order, each a new dict with this stage's columns added."""


def combined_resources(stages: list[Stage]) -> dict:
    """What one worker running all ``stages`` needs: the largest CPU and GPU need among them."""
    return {"num_cpus": max(s.resources.get("num_cpus", 1) for s in stages),
            "num_gpus": max(s.resources.get("num_gpus", 0) for s in stages)}


def run_stages(stages: list[Stage], records: list[dict]) -> list[dict]:
    """Pass ``records`` through ``stages`` in order (each already set up)."""
    for stage in stages:
        records = stage.process(records)
    return records
