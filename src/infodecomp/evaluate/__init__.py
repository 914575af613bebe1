"""Evaluate a model over a dataset: compositional tests, localization, prompt interventions.

Each evaluation is a module with ``make_task(model, settings, reference)`` (what to measure per
item), ``summarize(rows, settings)`` and ``table(summary)``; :mod:`.runner` writes the rows
(resumable, sharded with Accelerate) and the summary. ``infodecomp eval ...`` is the command.
:mod:`.prompts` (``infodecomp heatmap --prompts``) runs on the same runner: ``TASKS`` is every
kind of run whose summary and table the runner rebuilds.
"""

from . import compositional, intervention, localization, prompts
from .items import BadItemError, CompositionalItem, InterventionItem, LocalizationItem
from .runner import read_rows, run, summarize

EVALUATIONS = {
    "compositional": compositional,
    "localization": localization,
    "intervention": intervention,
}
TASKS = {**EVALUATIONS, "prompts": prompts}

__all__ = [
    "EVALUATIONS",
    "BadItemError",
    "CompositionalItem",
    "InterventionItem",
    "LocalizationItem",
    "TASKS",
    "read_rows",
    "run",
    "summarize",
]
