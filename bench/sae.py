"""Benchmark: SAE training throughput (tokens/s), safelab's BatchTopK trainer vs a plain PyTorch loop.

Both do the same maths on the same batches (random Gaussian rows of width ``--d``, default 576,
the default model's d_model; training speed does not depend on the values): BatchTopK with the
same ``k`` and batch, AuxK on dead latents, the decoder gradient projected off each row and the
rows renormalised, Adam at the same learning rate. What differs is how:

- **safelab** (``safelab.sae.train.BatchTopKTrainer.train_step``): the batch top-k ranks only
  the entries above a hint from the previous batch (exact; full top-k as fallback), decoding
  gathers the k active decoder rows per token (``embedding_bag``), Adam is a few fused in-place ops;
- **plain**: ``relu(pre).flatten().topk(k * batch)``, a dense code ``z`` scattered into
  ``[batch, d_sae]`` and ``z @ W_dec``, ``torch.optim.Adam``;
- **saelens** (optional, only when ``sae_lens`` imports, e.g. in ``.venv-bench``): SAELens's own
  step, ``SAETrainer._train_step`` on a ``BatchTopKTrainingSAE`` (its training forward pass with
  AuxK, backward, grad-norm clipping, the ``Adam`` its trainer builds, its dead-latent counters).
  The batches are fed to the SAE directly (no model, no hub, no data provider is read). Same
  d_in, d_sae, k, batch, learning rate and dead window (in steps); SAELens's own defaults
  otherwise (``k_aux = d_in // 2``, AuxK coefficient set to safelab's ``aux_coef``, decoder
  norms rescaled into the activations rather than renormalised).

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/sae.py [--steps 10] [--reps 3]
    HF_HUB_OFFLINE=1 .venv-bench/bin/python bench/sae.py   # with sae-lens installed there

Last line: ``{"train_vs_plain": r, "tokens_per_s": t, "plain_tokens_per_s": p}``, plus
``"saelens_vs_safelab"`` and ``"saelens_tokens_per_s"`` when SAELens ran, where the ratios are
peer time / safelab time (above 1: safelab is faster).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

from _util import final_json, interleaved, machine_note, median, print_table, ratio
from safelab.sae.train import BatchTopKTrainer, SAETrainConfig


class PlainLoop:
    """The same BatchTopK + AuxK step written the obvious way."""

    def __init__(self, cfg: SAETrainConfig, d: int) -> None:
        self.cfg, self.d_sae = cfg, d * cfg.expansion
        g = torch.Generator().manual_seed(cfg.seed)
        w = torch.randn(self.d_sae, d, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        self.W_enc = torch.nn.Parameter(w.T.clone())
        self.W_dec = torch.nn.Parameter(w)
        self.b_enc = torch.nn.Parameter(torch.zeros(self.d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(params, lr=cfg.lr(self.d_sae))
        self.since_fired = torch.zeros(self.d_sae, dtype=torch.long)

    def step(self, x: torch.Tensor) -> None:
        cfg = self.cfg
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        flat = torch.relu(pre).flatten()
        top = flat.topk(cfg.k * len(x))
        z = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
        x_hat = z @ self.W_dec + self.b_dec
        err = x - x_hat
        loss = err.pow(2).sum(-1).mean()
        dead = self.since_fired >= cfg.dead_tokens
        if dead.any():
            k_aux = min(cfg.aux_k, int(dead.sum()))
            t = pre.masked_fill(~dead, -math.inf).topk(k_aux, dim=-1)
            z_aux = torch.zeros_like(pre).scatter(-1, t.indices, torch.relu(t.values))
            e = err.detach()
            aux = (z_aux @ self.W_dec - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(
                -1
            ).mean()
            loss = loss + cfg.aux_coef * aux
        self.opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            g = self.W_dec.grad
            assert g is not None
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec
            self.opt.step()
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.since_fired += len(x)
            self.since_fired[(z > 0).any(0)] = 0


def saelens_step(
    cfg: SAETrainConfig, d: int, batch_size: int
) -> tuple[Callable[[torch.Tensor], object] | None, str]:
    """SAELens's own BatchTopK training step, or None and why it cannot run."""
    try:
        import sae_lens
        from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAETrainer
        from sae_lens.config import SAETrainerConfig
    except Exception as e:  # any import failure means "peer skipped"
        return None, f"{type(e).__name__}: {e}"
    d_sae = d * cfg.expansion
    torch.manual_seed(cfg.seed)
    sae = BatchTopKTrainingSAE(
        BatchTopKTrainingSAEConfig(
            d_in=d, d_sae=d_sae, k=cfg.k, aux_loss_coefficient=cfg.aux_coef, device="cpu"
        )
    )
    lr = cfg.lr(d_sae)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=10**12,
            train_batch_size_samples=batch_size,
            lr=lr,
            lr_end=lr,
            # dead after more than this many steps without firing = safelab's dead_tokens
            dead_feature_window=max(cfg.dead_tokens // batch_size - 1, 0),
            device="cpu",
        ),
        sae=sae,
        data_provider=iter(()),
    )
    return (lambda x: trainer._train_step(sae, x)), f"sae_lens {sae_lens.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10, help="training steps per repetition")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    # dead_tokens small enough that AuxK runs in both (latents die quickly on random data).
    cfg = SAETrainConfig(
        store="",
        out="",
        expansion=args.expansion,
        k=args.k,
        batch_size=args.batch_size,
        dead_tokens=4 * args.batch_size,
    )
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch_size, args.d, generator=g) for _ in range(args.steps)]
    ours, plain = BatchTopKTrainer(cfg, args.d), PlainLoop(cfg, args.d)
    saelens, why = saelens_step(cfg, args.d, args.batch_size)
    print(
        f"d={args.d} d_sae={args.d * args.expansion} k={args.k} batch={args.batch_size}, "
        f"{args.steps} steps per repetition, CPU"
    )
    print(f"SAELens peer: {why}" if saelens else f"SAELens peer skipped ({why})")
    print(machine_note())

    def run_ours() -> None:
        for b in batches:
            ours.train_step(b)

    def run_plain() -> None:
        for b in batches:
            plain.step(b)

    peers: dict[str, Callable[[], None]] = {"safelab": run_ours, "plain": run_plain}
    if saelens is not None:
        step = saelens

        def run_saelens() -> None:
            for b in batches:
                step(b)

        peers["saelens"] = run_saelens
    for run in peers.values():
        run()  # warm-up (and latents start dying, so AuxK is active)
    times = interleaved(peers, args.reps)
    print_table(times)
    tokens = args.steps * args.batch_size
    print(machine_note())
    result = {
        "train_vs_plain": ratio(times["plain"], times["safelab"]),
        "tokens_per_s": round(tokens / median(times["safelab"]), 1),
        "plain_tokens_per_s": round(tokens / median(times["plain"]), 1),
    }
    if "saelens" in times:
        result["saelens_vs_safelab"] = ratio(times["saelens"], times["safelab"])
        result["saelens_tokens_per_s"] = round(tokens / median(times["saelens"]), 1)
    final_json(result)


if __name__ == "__main__":
    main()
