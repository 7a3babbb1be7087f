"""The auditing agent: an auditor model probes a target model, a judge scores the transcript.

Run it as ``inspect eval safelab/audit --model TARGET --model-role auditor=... --model-role judge=...``.
"""

from safelab.audit.auditor import STORE_KEY, auditor_agent
from safelab.audit.conversation import Branch, TargetConversation, render_transcript
from safelab.audit.dimensions import Dimension, DimensionSet, load_dimensions
from safelab.audit.judge import Verdict, audit_judge, parse_verdict
from safelab.audit.seeds import Seed, load_seeds, seeds_dataset
from safelab.audit.session import AuditConfig, AuditSession
from safelab.audit.task import audit

__all__ = [
    "STORE_KEY",
    "AuditConfig",
    "AuditSession",
    "Branch",
    "Dimension",
    "DimensionSet",
    "Seed",
    "TargetConversation",
    "Verdict",
    "audit",
    "audit_judge",
    "auditor_agent",
    "load_dimensions",
    "load_seeds",
    "parse_verdict",
    "render_transcript",
    "seeds_dataset",
]
