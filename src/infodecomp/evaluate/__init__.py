"""Evaluate a model over a dataset: compositional tests, localization, prompt interventions.

Each evaluation is a module with ``make_task(model, settings, reference)`` (what to measure per
item), ``summarize(rows, settings)`` and ``table(summary)``; :mod:`.runner` writes the rows
(resumable, sharded with Accelerate) and the summary. ``infodecomp eval ...`` is the command.
:mod:`.prompts` (``infodecomp heatmap --prompts``) runs on the same runner: ``TASKS`` is every
kind of run whose summary and table the runner rebuilds.
"""

from . import prompts, runner
from .evaluation import EVALUATIONS, evaluate
from .items import BadItemError, CompositionalItem, InterventionItem, LocalizationItem
from .runner import read_rows, run, summarize

TASKS = {**EVALUATIONS, "prompts": prompts}
runner.TASKS.update(TASKS)  # what summarize(out) rebuilds, by name

__all__ = [
    "EVALUATIONS",
    "BadItemError",
    "CompositionalItem",
    "InterventionItem",
    "LocalizationItem",
    "TASKS",
    "evaluate",
    "read_rows",
    "run",
    "summarize",
]
