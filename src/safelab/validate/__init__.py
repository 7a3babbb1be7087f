"""``safelab validate``: every detector against every model organism and the base model.

One matrix: rows are detectors (each evaluation's scorer, the defection probe, the judge
monitor, an SAE latent when an SAE is given), columns are organisms and the base model. Each
cell holds an effect with its 95% interval and a verdict:

* organism columns: the effect is the rate difference from the base model (behavioural
  scorers, oriented so that positive = more of the misbehaviour) or, for white-box detectors,
  the AUROC gain over the base with the same inputs (:mod:`safelab.interp.base_control`);
  the verdict is ``caught``, ``not caught`` or ``unscorable`` (never "safe");
* the base column: the same detector on the base model alone (the contrast between the
  conditions where the organism misbehaves and where it does not, or the base's AUROC with
  the home organism's inputs); the verdict is ``fires`` (a false alarm), ``quiet`` or
  ``unscorable``.

* :mod:`safelab.validate.organisms`: the catalogue the matrix is built from (organism kinds,
  recipes, the checks that should catch each);
* :mod:`safelab.validate.verdicts`: effects and verdicts (pure functions);
* :mod:`safelab.validate.run`: ``run_validate(cfg, out) -> ValidationResult`` (resumable, one
  file per cell).
"""
