"""Weak-to-strong generalisation (Burns et al. 2023): can a weak supervisor elicit a stronger
model's knowledge?

Modules in the order the data moves: :mod:`~safelab.w2s.tasks` (binary tasks and their fixed
splits), :mod:`~safelab.w2s.weak` (weak supervisors), :mod:`~safelab.w2s.losses` (plain and
auxiliary-confidence cross-entropy), :mod:`~safelab.w2s.student` (the strong student),
:mod:`~safelab.w2s.pgr` (performance gap recovered, with intervals), :mod:`~safelab.w2s.run`
(the resumable experiment) and :mod:`~safelab.w2s.report` (the HTML page).
"""
