"""Benchmark: capture one middle-layer site for 32 prompts x 40 tokens, safelab vs its peers.

Peers, all on the same weights (the cached dequantised folder of the default model), float32,
CPU, one batch of 32, every token position kept:

- ``safelab``: ``model.capture(prompts, SITE, position="all", batch_size=32)``;
- ``bare_full``: a bare transformers forward of the whole model (``model.hf(**batch)``) with one
  ``register_forward_hook`` on the layer: the limit for a full forward pass;
- ``nnsight``: ``LanguageModel.trace`` saving the layer's output;
- ``transformerlens``: ``TransformerBridge.run_with_cache`` with a ``names_filter`` on the one hook.

safelab's capture runs the decoder body only and stops after the deepest block it needs, so it
skips the upper layers and the unembedding. To show where the gain comes from, two more bare
transformers figures are printed (not part of the ratios): ``bare_body`` (decoder body, no
unembedding) and ``bare_stopped`` (body, stopped by an exception after the layer, as safelab does).

Every peer starts from the same texts and tokenises inside the timed region. The prompts are
written so that each is exactly ``--tokens`` tokens, so no peer pads. Before timing, the captured
tensors of all peers are compared (max abs difference printed).

Run (needs the bench venv for nnsight and transformer-lens, see bench/setup.sh)::

    HF_HUB_OFFLINE=1 .venv-bench/bin/python bench/capture.py [--reps 7]

Last line: ``{"capture_vs_bare": r1, "capture_vs_nnsight": r2, "capture_vs_transformerlens": r3}``,
each peer median time / safelab median time (null when a peer cannot run).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch

from _util import final_json, interleaved, machine_note, median, print_table, ratio

SITE = "blocks.15.resid_post"
LAYER = 15
TL_HOOK = f"blocks.{LAYER}.hook_resid_post"

# Varied English passages (~30-40 tokens each). A prompt is one passage followed by another, cut
# to exactly --tokens tokens.
PASSAGES = [
    "The old lighthouse keeper climbed the spiral stairs every evening, counting each step aloud "
    "so that the silence of the tower would not swallow him whole before the lamp was lit.",
    "Photosynthesis converts light energy into chemical energy, storing it in the bonds of sugar "
    "molecules that plants later break down to fuel growth, repair and reproduction.",
    "When the markets opened on Monday, investors sold shares of technology companies and bought "
    "government bonds, a sign that confidence in quick growth had started to fade.",
    "My grandmother kept a notebook of recipes written in three languages, and half of the pages "
    "were stained with butter, flour and the occasional drop of strong black coffee.",
    "The committee agreed to postpone the vote until the engineers had finished testing the "
    "bridge, because nobody wanted to approve a design that might fail in heavy winter storms.",
    "A good night of sleep improves memory, mood and attention, while chronic sleep loss raises "
    "the risk of heart disease, diabetes and accidents on the road or at work.",
    "The river flooded its banks after a week of rain, carrying fallen trees, garden furniture "
    "and at least one very surprised goat past the church in the middle of the village.",
    "To reset the router, hold the small button on the back for ten seconds, wait until the "
    "lights blink in orange, and then reconnect every device using the new network password.",
    "In the spring of 1905 a young patent clerk published four papers that changed physics, "
    "explaining the photoelectric effect, Brownian motion and the relation between mass and energy.",
    "She trained for the marathon by running before dawn, when the streets were empty and the "
    "only sounds were her breathing, her footsteps and the distant rumble of delivery trucks.",
    "Volcanic soils are often very fertile, which is why farmers continue to plant vineyards and "
    "orchards on the slopes of mountains that could erupt again at almost any time.",
    "The museum's new exhibition brings together paintings, letters and photographs that tell the "
    "story of the city's port and the sailors who left from it to cross distant oceans.",
    "Please remember to water the tomatoes twice a day while we are away, and if the cat refuses "
    "to eat, try warming her food a little or mixing in a spoonful of plain yogurt.",
    "Economists disagree about whether raising the minimum wage reduces employment, because the "
    "effect seems to depend on local prices, the size of the increase and the industry involved.",
    "The spacecraft fired its engines for eleven minutes to enter orbit around the planet, then "
    "unfolded its solar panels and began sending the first blurry images back to Earth.",
    "At the end of the long hallway there was a door painted bright green, and behind it the "
    "children found a room full of maps, globes, compasses and dusty wooden model ships.",
    "Regular exercise strengthens the heart and lungs, helps control weight, and can lift the "
    "mood of people who struggle with anxiety, stress or the gloom of the winter months.",
    "The judge asked both lawyers to keep their closing arguments short, reminding the jury that "
    "only the evidence presented in court could be used to reach a fair and final verdict.",
    "Bees communicate the direction and distance of flowers through a waggle dance, moving in "
    "figure eights on the comb while their sisters follow closely and learn the route.",
    "The town council voted to turn the empty parking lot into a public garden with benches, "
    "fruit trees and a small stage where local musicians could play on summer evenings.",
    "Learning a second language as an adult takes patience, but daily practice, good books and "
    "conversations with native speakers can make steady progress feel surprisingly rewarding.",
    "The storm knocked out power across the northern valley, so families lit candles, played "
    "board games and listened to battery radios while the wind howled around their houses.",
    "Glaciers store about two thirds of the world's fresh water, and as they melt faster each "
    "decade, rivers that depend on them face floods in spring and shortages in late summer.",
    "The detective noticed that the clock on the mantelpiece had stopped at a quarter past nine, "
    "exactly the time the butler claimed he had been polishing silver in the kitchen.",
    "Modern compilers rewrite programs in many small steps, removing dead code, inlining short "
    "functions and reordering instructions so the processor can keep all its units busy.",
    "Our hiking group reached the summit just before noon, shared sandwiches on a flat rock, and "
    "watched eagles circle slowly above the pine forests that covered the valley below.",
    "Vaccines train the immune system to recognise a germ without causing the disease, so that "
    "the body can respond quickly and strongly if it ever meets the real infection later.",
    "The bakery on the corner opens at six, and by seven there is already a queue of nurses, "
    "taxi drivers and students waiting for warm croissants and strong coffee in paper cups.",
    "Chess players study openings for years, yet the best games are often decided by a single "
    "quiet move in the middle game that the opponent did not take seriously at the time.",
    "The library will close for renovation next month, and during that time borrowed books can "
    "be returned at the community centre, which has extended its opening hours for the purpose.",
    "Coral reefs cover a tiny fraction of the ocean floor but shelter about a quarter of all "
    "marine species, which makes their decline one of the most worrying trends in ecology.",
    "After the concert, the violinist stayed on stage to answer questions from the audience, "
    "explaining how she chose her instrument and why she practised scales every single morning.",
]


def exact_prompts(tokenizer: Any, n_prompts: int, n_tokens: int) -> list[str]:
    """Cut each passage to a text that tokenises (as safelab does) to exactly ``n_tokens``."""
    if n_prompts > len(PASSAGES):
        raise SystemExit(f"need {n_prompts} passages, have {len(PASSAGES)}")
    out: list[str] = []
    for i in range(n_prompts):
        passage = PASSAGES[i] + " " + PASSAGES[(i + 7) % len(PASSAGES)]
        ids = tokenizer(passage, add_special_tokens=True)["input_ids"]
        for k in [n_tokens, n_tokens - 1, n_tokens + 1, n_tokens - 2, n_tokens + 2]:
            text = tokenizer.decode(ids[:k], skip_special_tokens=True)
            if len(tokenizer(text, add_special_tokens=True)["input_ids"]) == n_tokens:
                out.append(text)
                break
        else:
            raise SystemExit(f"cannot cut {passage[:40]!r} to exactly {n_tokens} tokens")
    return out


class _Stop(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=40, help="tokens per prompt (exact)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per peer (median)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    from safelab.models.loading import default_gguf_path, dequantised_folder, load_model

    folder = str(dequantised_folder(default_gguf_path()))
    model = load_model("default", dtype="float32", device="cpu")
    tok = model.tokenizer
    prompts = exact_prompts(tok, args.prompts, args.tokens)
    n, t = len(prompts), args.tokens
    print(f"model folder: {folder}")
    print(f"{n} prompts x {t} tokens, site {SITE}, float32, CPU, batch {n}")
    print(machine_note())

    def tokenize() -> dict[str, torch.Tensor]:
        batch = tok(prompts, add_special_tokens=True, return_tensors="pt")
        assert batch["input_ids"].shape == (n, t)
        return dict(batch)

    # -- peers: each returns the captured [n, t, d] tensor ---------------------------------
    def run_safelab() -> torch.Tensor:
        acts = model.capture(prompts, SITE, position="all", batch_size=n)
        return acts[SITE].reshape(n, t, -1)

    hf = model.hf  # the bare peers use the very same module as safelab

    def hooked(module: Any, call: Callable[[], Any], stop: bool) -> torch.Tensor:
        got: list[torch.Tensor] = []

        def hook(_m: Any, _i: Any, out: Any) -> None:
            got.append((out[0] if isinstance(out, tuple) else out).detach())
            if stop:
                raise _Stop

        handle = module.register_forward_hook(hook)
        try:
            with torch.inference_mode():
                call()
        except _Stop:
            pass
        finally:
            handle.remove()
        return got[0]

    layer = hf.model.layers[LAYER]

    def run_bare_full() -> torch.Tensor:
        return hooked(layer, lambda: hf(**tokenize()), stop=False)

    def run_bare_body() -> torch.Tensor:
        return hooked(layer, lambda: hf.model(**tokenize()), stop=False)

    def run_bare_stopped() -> torch.Tensor:
        return hooked(layer, lambda: hf.model(**tokenize()), stop=True)

    peers: dict[str, Callable[[], torch.Tensor]] = {
        "safelab": run_safelab,
        "bare_full": run_bare_full,
    }
    errors: dict[str, str] = {}
    load_s: dict[str, float] = {}

    try:
        from nnsight import LanguageModel

        t0 = time.perf_counter()
        lm = LanguageModel(folder, device_map="cpu", dtype=torch.float32, dispatch=True)
        load_s["nnsight"] = time.perf_counter() - t0

        def run_nnsight() -> torch.Tensor:
            with torch.inference_mode(), lm.trace(tokenize()):
                saved = lm.model.layers[LAYER].output.save()
            out = saved[0] if isinstance(saved, tuple) else saved
            return out.detach()

        peers["nnsight"] = run_nnsight
    except Exception as e:  # report and go on: a peer that cannot load gets a null ratio
        errors["nnsight"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()

    try:
        from transformer_lens.model_bridge import TransformerBridge

        t0 = time.perf_counter()
        bridge = TransformerBridge.boot_transformers(folder, device="cpu", dtype=torch.float32)
        load_s["transformerlens"] = time.perf_counter() - t0

        def run_tl() -> torch.Tensor:
            ids = tokenize()["input_ids"]
            with torch.inference_mode():
                _, cache = bridge.run_with_cache(ids, names_filter=lambda name: name == TL_HOOK)
            return cache[TL_HOOK].detach()

        peers["transformerlens"] = run_tl
    except Exception as e:
        errors["transformerlens"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()

    peers["bare_body"] = run_bare_body
    peers["bare_stopped"] = run_bare_stopped
    for name, secs in load_s.items():
        print(f"load {name}: {secs:.2f}s (not timed below)")

    # -- agreement (also the warm-up) ------------------------------------------------------
    ref = run_safelab()
    print(f"agreement with safelab capture [{n}, {t}, {ref.shape[-1]}] (max abs diff):")
    for name, fn in list(peers.items()):
        try:
            out = fn().float()
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            del peers[name]
            continue
        diff = (out.reshape(ref.shape) - ref).abs().max().item()
        rel = diff / ref.abs().max().item()
        print(f"  {name:<16} {diff:.3e}  (relative to max |act| {rel:.1e})")
        if not diff < 1e-2:
            errors[name] = f"captured tensor disagrees with safelab (max abs diff {diff:.3g})"
            print(f"  !! {name} disagrees: not timed")
            del peers[name]

    # second warm-up pass, untimed, so allocator and thread pools settle for everyone
    for fn in peers.values():
        fn()

    print(f"timing: {args.reps} interleaved repetitions (order rotates), medians reported")
    times = interleaved(peers, args.reps)
    print_table(times)
    ours = times["safelab"]

    def r(name: str) -> float | None:
        return ratio(times[name], ours) if name in times else None

    tokens = n * t
    print(f"safelab capture: {tokens / median(ours):.0f} tokens/s")
    print("extra figures (peer / safelab, not in the JSON):")
    for extra in ("bare_body", "bare_stopped"):
        print(f"  {extra}: {r(extra)}")
    print(
        "  bare_stopped is what safelab does (body only, stop after the layer): a ratio near 1.0 "
        "there means safelab adds little overhead; the gain over bare_full comes from skipping "
        f"layers {LAYER + 1}..{model.n_layers - 1} and the unembedding."
    )
    for name, err in errors.items():
        print(f"ERROR {name}: {err}")
    print(machine_note())
    final_json(
        {
            "capture_vs_bare": r("bare_full"),
            "capture_vs_nnsight": r("nnsight"),
            "capture_vs_transformerlens": r("transformerlens"),
        }
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
