"""Sites: stable, printable names for the places in a model where activations live.

Names follow the field's convention (TransformerLens-style), without the ``hook_`` prefix:

==============================  ==============================================================
``blocks.{L}.resid_pre``        residual stream entering block L (``hidden_states[L]``)
``blocks.{L}.resid_mid``        residual stream after block L's attention, before its MLP
``blocks.{L}.resid_post``       residual stream leaving block L (``hidden_states[L + 1]``)
``blocks.{L}.attn_out``         what block L's attention adds to the residual stream
``blocks.{L}.mlp_in``           what block L's MLP reads: ``resid_mid`` after its norm (transcoders)
``blocks.{L}.mlp_out``          what block L's MLP adds to the residual stream
``ln_final``                    the final norm's output (what the unembedding reads)
==============================  ==============================================================

Glob patterns (``blocks.*.resid_post``, ``blocks.1?.mlp_out``) select several sites at once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from safelab.errors import SafelabError

BLOCK_KINDS: tuple[str, ...] = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "mlp_in",
)
GLOBAL_SITES: tuple[str, ...] = ("ln_final",)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.([a-z_]+)$")


@dataclass(frozen=True, order=True)
class Site:
    """One hook site: a block index (or None for model-level sites) and a kind."""

    layer: int | None
    kind: str

    def __str__(self) -> str:
        return self.kind if self.layer is None else f"blocks.{self.layer}.{self.kind}"

    @property
    def name(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, name: str, n_layers: int | None = None) -> Site:
        """Parse a site name, checking the layer against ``n_layers`` when given."""
        name = name.strip()
        if name in GLOBAL_SITES:
            return cls(None, name)
        m = _BLOCK_RE.match(name)
        if m is None or m.group(2) not in BLOCK_KINDS:
            raise SafelabError(
                f"unknown site {name!r}: use blocks.<layer>.<kind> with kind one of "
                f"{', '.join(BLOCK_KINDS)}, or {', '.join(GLOBAL_SITES)}"
            )
        layer = int(m.group(1))
        if n_layers is not None and layer >= n_layers:
            raise SafelabError(
                f"unknown site {name!r}: this model has blocks 0..{n_layers - 1} "
                f"(try blocks.{n_layers // 2}.{m.group(2)})"
            )
        return cls(layer, m.group(2))


def all_sites(n_layers: int) -> list[Site]:
    """Every site of a model with ``n_layers`` blocks, in forward order."""
    sites = [Site(layer, kind) for layer in range(n_layers) for kind in BLOCK_KINDS]
    return sites + [Site(None, k) for k in GLOBAL_SITES]


def resolve_sites(patterns: str | Iterable[str], n_layers: int) -> list[Site]:
    """Expand names and glob patterns (comma-separated or a list) into concrete sites.

    Raises:
        SafelabError: a name is unknown or a pattern matches nothing.
    """
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",")]
    patterns = [p.strip() for p in patterns if p.strip()]
    if not patterns:
        raise SafelabError("no sites given: name at least one, e.g. blocks.0.resid_post")
    universe = all_sites(n_layers)
    names = [str(s) for s in universe]
    chosen: list[Site] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            hits = [
                s for s, n in zip(universe, names, strict=True) if fnmatch.fnmatchcase(n, pattern)
            ]
            if not hits:
                raise SafelabError(
                    f"site pattern {pattern!r} matches no site of this model "
                    f"(blocks 0..{n_layers - 1}; kinds {', '.join(BLOCK_KINDS)})"
                )
        else:
            hits = [Site.parse(pattern, n_layers)]
        chosen.extend(h for h in hits if h not in chosen)
    return sorted(chosen, key=_forward_order)


def _forward_order(site: Site) -> tuple[int, int]:
    if site.layer is None:
        return (1 << 30, 0)
    return (
        site.layer,
        ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post").index(site.kind),
    )
