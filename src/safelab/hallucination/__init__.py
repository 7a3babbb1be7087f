"""Hallucination probes (Obeso et al. 2025): flag fabricated facts token by token.

Closed-world fact tables (:mod:`~safelab.hallucination.tables`) give labels without web
search: the model answers questions about an entity in its own words, the attribute it states
is matched to the table (:mod:`~safelab.hallucination.matching`) and labelled supported or
fabricated at its token span. :mod:`~safelab.hallucination.run` trains and scores a token-level
probe against baselines; :mod:`~safelab.hallucination.task` is the ``safelab/hallucination``
Inspect task that scores each answer while the ``safelab/`` provider writes it.
"""
