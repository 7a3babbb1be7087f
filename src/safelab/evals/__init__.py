"""Behavioural safety evaluations as Inspect tasks (``inspect eval safelab/<name>``).

One module per evaluation, with its scenarios, prompts and rubrics as data files under
``data/``:

- :mod:`~safelab.evals.agentic`: ``agentic_misalignment`` (blackmail / leaking e-mail agent)
- :mod:`~safelab.evals.sandbag`: ``sandbagging`` (accuracy gap under an incentive to fail)
- :mod:`~safelab.evals.mwe`: ``self_preservation``, ``power_seeking``, ``corrigibility``
- :mod:`~safelab.evals.hints`: ``cot_faithfulness`` (the hint test)
- :mod:`~safelab.evals.refusal`: ``over_refusal`` (XSTest format)

:mod:`~safelab.evals.suite` runs them all on one model and tabulates the results by condition.
"""

from safelab.evals.agentic import agentic_misalignment
from safelab.evals.hints import cot_faithfulness
from safelab.evals.mwe import corrigibility, power_seeking, self_preservation
from safelab.evals.refusal import over_refusal
from safelab.evals.sandbag import sandbagging

__all__ = [
    "agentic_misalignment",
    "corrigibility",
    "cot_faithfulness",
    "over_refusal",
    "power_seeking",
    "sandbagging",
    "self_preservation",
]
