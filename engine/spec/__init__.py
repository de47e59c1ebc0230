"""Generation specs: a YAML file that says which texts to voice how often, expanded into tasks.

    spec = GenerationSpec.load("pipelines/configs/builtin.yaml")   # raises SpecError on bad input
    tasks = spec.expand()                                           # list[Task], sorted by id
    write_tasks(tasks, "RUN/tasks.parquet"); spec.hash              # '3f0c...' (16 hex digits)

The schema (every key but ``texts`` and ``count`` is optional; paths are relative to the YAML):

    name: demo                  # names the run (default: the file's stem)
    seed: 7                     # every random choice derives from it (default 0)
    count: 200                  # total tasks, >= 1 (may be left out when quotas give the total)
    texts:                      # one or more sources; texts are pooled per language
      - builtin: [en, zh]       # the packaged sentences (engine/data/sentences_{en,zh}.txt);
                                # en-basic: 12,000 short closed-vocabulary English ones
      - file: lines.txt         # one text per line, blank lines skipped
        lang: en                # en|zh|ja|ko for the whole source; left out -> from the script
      - file: rows.jsonl        # {"text": ..., "lang": optional} per line
      - dataset: ./my_ds        # a save_to_disk folder, or data files load_dataset reads
        column: text            # text column (default text); lang_column, split also accepted
        limit: 500              # any source: keep its first N texts (builtin: N per language)
    categories:                 # shares per dimension: value -> weight (normalised), or a list
      emotion: {neutral: 4, happy: 1, sad: 1, angry: 1, coquettish: 1, surprised: 1, calm: 1}
      intensity: {1: 1, 3: 2, 5: 1}      # among tasks with an emotion (default 1-5 equal)
      dialect: {mandarin: 2, cantonese: 1, english: 2, english-gb: 1}
      style: {speech: 18, rap: 1, humming: 1}
      speed: [slow2, slow1, normal, fast1, fast2]
      speaker: {none: 9, f1: 1}          # or clone.share; names come from clone.speakers
    quotas:                     # exact cells; unnamed fields default (neutral, speech, normal)
      - {emotion: happy, intensity: 5, dialect: cantonese, count: 10}
      - {style: rap, lang: en, count: 4}  # lang picks that language's default dialect
    clone:
      speakers: builtin         # or a folder of NAME.wav + NAME.txt (or speakers.jsonl)
      share: 0.1                # fraction of the share-allocated tasks that clone, spread evenly

Rules:
- Quota cells are produced exactly; the rest of ``count`` is apportioned from ``categories``
  (largest remainders per dimension, see :mod:`engine.spec.allocate`). Missing dimensions default to
  neutral / speech / normal speed / no clone, and one default dialect per text language.
- Invalid combinations from shares (rap or humming with an emotion, humming with a speed) are never
  produced: they swap values with other tasks, keeping the counts exact where the shares allow. A
  dialect whose language no text source provides is dropped from the shares with a warning. The
  same combinations listed in ``quotas`` are errors.
- Each task gets a text of its dialect's language, dealt from a seeded shuffle. A text already used
  with the same instruction and speaker is skipped for the next one; only when a cell has used
  every text of its language does the spec produce fewer than ``count`` tasks (with a warning).
- Task ids are content hashes (``engine.task.task_id``); the per-task seed derives from the spec
  seed and the id. Tasks come sorted by id, so the same spec writes a byte-identical table.
"""
from engine.spec.errors import SpecError
from engine.spec.assign import task_seed
from engine.spec.generation import GenerationSpec
from engine.spec.table import TASK_SCHEMA, read_tasks, task_batches, tasks_to_table, write_tasks
from engine.spec.texts import detect_lang

__all__ = [
    "GenerationSpec", "SpecError", "TASK_SCHEMA", "detect_lang", "read_tasks", "task_batches", "task_seed",
    "tasks_to_table", "write_tasks",
]
