"""Sparse autoencoders: the model, the field's file formats, CPU training, metrics, feature pages.

>>> from safelab.sae.formats import load_sae
>>> sae = load_sae("runs/sae/l15")          # SAELens, sparsify or Gemma Scope folders
>>> z = sae.encode(acts)                     # [..., d_in] -> [..., d_sae]
"""
