"""Thought anchors (Bogdan et al. 2025): which sentences of a reasoning trace decide the answer.

Three views of one trace, in the order data moves:

- :mod:`~safelab.anchors.traces`: a trace (question, reasoning split into sentences, answer line);
- :mod:`~safelab.anchors.rollouts`: continuations resampled from the prefix before each sentence
  (prefix KV cache computed once per prefix), cached on disk per (trace, sentence);
- :mod:`~safelab.anchors.importance`: resampling, counterfactual and forced-answer importance
  (KL of answer distributions, Laplace smoothing, bootstrap intervals over rollouts);
- :mod:`~safelab.anchors.attention`: sentence x sentence attention per head, receiver heads and
  attention suppression;
- :mod:`~safelab.anchors.run`: ``AnchorsConfig`` -> ``run_anchors(cfg, out)`` -> ``AnchorsResult``.
"""
