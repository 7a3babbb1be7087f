"""The monitor report as an experiment: ``MonitorReportConfig`` -> :func:`run_monitor_report`.

Each monitor (an Inspect scorer) of a log is scored against the samples' ground-truth label:
ROC, AUROC and recall at 1% FPR with intervals, and with ``base_log`` each monitor's base-model
control. The result owns ``metrics.json`` (with the config), ``roc.png`` and ``report.html``::

    from safelab.monitors.run import MonitorReportConfig, run_monitor_report
    res = run_monitor_report(MonitorReportConfig(log="logs/x.eval"), "runs/monitors")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safelab.config import config_dict, option
from safelab.files import atomic_write_text
from safelab.monitors.roc import MonitorReport, format_report, monitor_report
from safelab.stats import DEFAULT_RESAMPLES


@dataclass(frozen=True)
class MonitorReportConfig:
    """Which log, which label, which monitors; the bootstrap's resamples and seed."""

    log: str = option("", "Inspect log (.eval or .json)")
    label: str = option("label", "sample metadata key holding the ground truth")
    positive: str | None = option(
        None, "label value that counts as positive (default: 1/true/deceptive/unsafe)"
    )
    monitor: tuple[str, ...] | None = option(
        None, "scorer to include (repeatable; default all)", append=True
    )
    flip: tuple[str, ...] | None = option(
        None, "scorer whose low values are suspicious (repeatable)", append=True
    )
    base_log: str | None = option(
        None,
        "the same eval on the base model (same sample ids): each monitor's base control "
        "(base AUROC, gain over it with 95%% CI, reads_input_not_behaviour)",
    )
    resamples: int = option(DEFAULT_RESAMPLES, "bootstrap resamples")
    seed: int = option(0, "bootstrap seed")


@dataclass
class MonitorReportResult:
    """The scored monitors and the config that chose them."""

    cfg: MonitorReportConfig
    report: MonitorReport

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "config": config_dict(self.cfg)}

    def summary(self) -> str:
        return format_report(self.report)

    def write(self, out: str | Path) -> Path:
        """``metrics.json``, ``roc.png`` (when any monitor has an AUROC) and ``report.html``."""
        from safelab.report import plots

        out = Path(out)
        payload = self.to_dict()
        path = atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
        curves = {
            name: (r.roc["fpr"], r.roc["tpr"], r.auroc)
            for name, r in self.report.monitors.items()
            if r.auroc is not None
        }
        title = f"monitors vs metadata[{self.cfg.label!r}]"
        images = [plots.roc_curves(curves, out / "roc.png", title=title)] if curves else []
        plots.write_html(out / "report.html", "monitor report", images, payload)
        return path


def run_monitor_report(
    cfg: MonitorReportConfig, out: str | Path | None = None
) -> MonitorReportResult:
    """Score every monitor of ``cfg.log``; write the result under ``out`` when given."""
    report = monitor_report(
        cfg.log,
        cfg.label,
        base_log=cfg.base_log,
        positive=cfg.positive,
        monitors=list(cfg.monitor) if cfg.monitor is not None else None,
        flip=list(cfg.flip) if cfg.flip is not None else None,
        n_resamples=cfg.resamples,
        seed=cfg.seed,
    )
    result = MonitorReportResult(cfg, report)
    if out is not None:
        result.write(out)
    return result
