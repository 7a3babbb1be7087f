"""The weak-to-strong experiment: tasks x losses x seeds, resumable per cell, into metrics.json.

For each task: load it, cap its rows, split it (fixed, see :mod:`safelab.w2s.tasks`), capture the
strong model's activations once (activation cache), train the weak supervisor on weak-train and
let it label strong-train. Then for each (loss, seed) cell: train the ceiling (the student's
head on strong-train's ground truth, plain cross-entropy) and the student (the same head on the
weak labels, with that loss), score all three on test and write
``<out>/cells/<task>/<loss>-seed<k>.json`` atomically. A rerun with the same config skips
finished cells. ``metrics.json`` gathers every cell with PGR intervals over test items, over
seeds, and over seeds and items together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.stats import DEFAULT_RESAMPLES, detector_metrics
from safelab.w2s.lora import LoraStudentConfig, lora_student_probs
from safelab.w2s.losses import LOSSES, LossConfig
from safelab.w2s.pgr import PerformanceGapRecovered, performance_gap_recovered, seed_interval
from safelab.w2s.student import StudentConfig, train_head
from safelab.w2s.tasks import (
    DEFAULT_MAX_ROWS,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
    BinaryTask,
    cap_rows,
    load_task,
    split_task,
)
from safelab.w2s.weak import DEFAULT_PROBE_SITE, parse_weak, weak_probs

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

FLAG_WEAK_AT_CHANCE = "weak_at_chance"
FLAG_NO_GAP = "no_gap"


@dataclass
class W2SConfig:
    """Everything that defines a run; saved in metrics.json and hashed into every cell."""

    tasks: list[str]
    weak: str = "bow"
    student: str = "default"
    """The strong model (a model spec for :func:`safelab.models.loading.load_model`)."""
    site: str = "auto"
    """The student's feature site; ``auto`` is ``blocks.{int(0.7 * n_layers)}.resid_post``."""
    position: str = "last"
    """``last`` token or ``mean`` over the text's tokens."""
    losses: list[str] = field(default_factory=lambda: list(LOSSES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    max_rows: int = DEFAULT_MAX_ROWS
    aux_coef: float = 0.5
    warmup_frac: float = 0.2
    student_cfg: StudentConfig = field(default_factory=StudentConfig)
    lora: bool = False
    """Fine-tune the strong model with LoRA + head instead of a head on frozen activations."""
    lora_cfg: LoraStudentConfig = field(default_factory=LoraStudentConfig)
    n_resamples: int = DEFAULT_RESAMPLES
    data_root: str | None = None
    cache: str | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.tasks:
            raise SafelabError("no tasks: give at least one --task")
        if not self.seeds:
            raise SafelabError("no seeds: give at least one --seeds value")
        for loss in self.losses:
            LossConfig(loss)
        parse_weak(self.weak)
        if self.position not in ("last", "mean"):
            raise SafelabError(f"unknown position {self.position!r}: use last or mean")
        if isinstance(self.student_cfg, dict):
            self.student_cfg = StudentConfig(**self.student_cfg)
        if isinstance(self.lora_cfg, dict):
            self.lora_cfg = LoraStudentConfig(**self.lora_cfg)

    def loss(self, name: str) -> LossConfig:
        return LossConfig(name, self.aux_coef, self.warmup_frac)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem if "/" in name else name)


def resolve_site(cfg: W2SConfig, model: WhiteBoxModel) -> str:
    site = f"blocks.{int(0.7 * model.n_layers)}.resid_post" if cfg.site == "auto" else cfg.site
    (resolved,) = (str(s) for s in model.resolve_sites(site))
    return resolved


def _features(
    model: WhiteBoxModel, task: BinaryTask, sites: list[str], cfg: W2SConfig, progress: bool
) -> dict[str, Any]:
    from safelab.interp.actcache import cached_activations
    from safelab.interp.contrast import ContrastSet, Example

    examples = [
        Example(t, y, "", f"{task.source}:{i}")
        for i, (t, y) in enumerate(zip(task.texts, task.labels, strict=True))
    ]
    data = ContrastSet(
        task.name,
        task.source,
        examples,
        "statements",
        "raw",
        cfg.position,  # type: ignore[arg-type]
        task.data_hash,
    )
    cached = cached_activations(
        model, data, sites, cache_root=cfg.cache, batch_size=cfg.batch_size, progress=progress
    )
    return cached.acts


def _model_metrics(
    probs: np.ndarray, labels: np.ndarray, n_resamples: int, seed: int
) -> dict[str, Any]:
    m = detector_metrics(probs, labels, n_resamples=n_resamples, seed=seed)
    return {
        "accuracy": m.accuracy,
        "accuracy_ci": m.accuracy_ci,
        "auroc": m.auroc,
        "auroc_ci": m.auroc_ci,
        "n": m.n,
        "n_pos": m.n_pos,
    }


def _cell_key(cfg: W2SConfig, task: BinaryTask, site: str, loss: str, seed: int) -> str:
    blob = json.dumps(
        [
            task.data_hash,
            cfg.weak,
            cfg.student,
            site,
            cfg.position,
            dataclasses.asdict(cfg.loss(loss)),
            dataclasses.asdict(cfg.student_cfg),
            dataclasses.asdict(cfg.lora_cfg) if cfg.lora else None,
            seed,
            cfg.n_resamples,
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cell(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    cell = json.loads(path.read_text())
    if cell.get("key") != key:
        raise SafelabError(
            f"{path} was written by a run with another config: use a new --out or delete {path.parent}"
        )
    return cell  # type: ignore[no-any-return]


@dataclass
class RunSummary:
    metrics: dict[str, Any]
    computed: int
    reused: int
    path: Path


def run_experiment(
    cfg: W2SConfig,
    out: str | Path,
    *,
    model: WhiteBoxModel | None = None,
    progress: bool = True,
    log: Any = print,
) -> RunSummary:
    """Run (or resume) every (task, loss, seed) cell and write ``<out>/metrics.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weak_spec = parse_weak(cfg.weak)
    computed = reused = 0
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for spec in cfg.tasks:
        task = cap_rows(load_task(spec, cfg.data_root), cfg.max_rows)
        splits = split_task(task)
        log(splits.describe(task))
        if model is None:
            from safelab.models.loading import load_model

            model = load_model(cfg.student, dtype="float32")
        site = resolve_site(cfg, model)
        # The default early probe site is always captured, so bow and probe runs share a capture.
        early = weak_spec.site or DEFAULT_PROBE_SITE
        sites = [site] + ([early] if early != site else [])
        keys = {
            (loss, s): _cell_key(cfg, task, site, loss, s) for loss in cfg.losses for s in cfg.seeds
        }
        folder = out / "cells" / slug(task.name)
        cells = {k: _read_cell(folder / f"{k[0]}-seed{k[1]}.json", key) for k, key in keys.items()}
        y = np.asarray(task.labels)
        test = np.asarray(splits.test)
        strong = np.asarray(splits.strong_train)
        acts: dict[str, Any] | None = None
        weak_p: np.ndarray | None = None
        if any(c is None for c in cells.values()):
            acts = _features(model, task, sites, cfg, progress)
            weak_p = weak_probs(weak_spec, task.texts, task.labels, splits.weak_train, acts)
        todo = [k for k, c in cells.items() if c is None]
        bar = _bar(progress, len(todo), task.name)
        for loss, seed in todo:
            assert acts is not None and weak_p is not None
            probs = {
                "weak": weak_p[test],
                **_train_student(
                    cfg, model, task, site, acts, weak_p, splits.strong_train, test, loss, seed
                ),
            }
            cell = {
                "key": keys[(loss, seed)],
                "task": task.name,
                "loss": loss,
                "seed": seed,
                "site": site,
                "student_kind": "lora" if cfg.lora else "linear_head",
                "weak_label_mean": float(weak_p[strong].mean()),
                "weak_label_accuracy": float(((weak_p[strong] > 0.5) == y[strong]).mean()),
                "models": {
                    k: _model_metrics(p, y[test], cfg.n_resamples, seed) for k, p in probs.items()
                },
                "correct": {
                    k: ((p > 0.5) == y[test]).astype(int).tolist() for k, p in probs.items()
                },
            }
            c = {k: ((p > 0.5) == y[test]).astype(int) for k, p in probs.items()}
            cell["pgr"] = performance_gap_recovered(
                c["weak"], c["student"], c["ceiling"], n_resamples=cfg.n_resamples, seed=seed
            ).to_dict()
            path = folder / f"{loss}-seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(cell) + "\n")
            cells[(loss, seed)] = cell
            computed += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        reused += len(cells) - len(todo)
        results[task.name] = _task_summary(task, splits.sizes(), site, cells, cfg)  # type: ignore[arg-type]
    metrics = {
        "config": cfg.to_dict(),
        "split": {
            "seed": SPLIT_SEED,
            "fractions": dict(
                zip(("weak_train", "strong_train", "test"), SPLIT_FRACTIONS, strict=True)
            ),
        },
        "tasks": results,
        "seconds": round(time.perf_counter() - t0, 1),
        "cells_computed": computed,
        "cells_reused": reused,
    }
    path = out / "metrics.json"
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n")
    return RunSummary(metrics, computed, reused, path)


def _train_student(
    cfg: W2SConfig,
    model: WhiteBoxModel,
    task: BinaryTask,
    site: str,
    acts: dict[str, Any],
    weak_p: np.ndarray,
    strong: list[int],
    test: np.ndarray,
    loss: str,
    seed: int,
) -> dict[str, np.ndarray]:
    """Test-set ``p(1)`` of the student (weak labels, ``loss``) and the ceiling (ground truth)."""
    y = np.asarray(task.labels)
    if cfg.lora:
        layer = int(site.split(".")[1])
        train_texts = [task.texts[i] for i in strong]
        test_texts = [task.texts[i] for i in test]

        def fit(targets: np.ndarray, how: LossConfig) -> np.ndarray:
            return lora_student_probs(
                model, train_texts, targets, test_texts, layer, how, cfg.lora_cfg, seed
            )

        return {
            "student": fit(weak_p[strong], cfg.loss(loss)),
            "ceiling": fit(y[strong], cfg.loss("xent")),
        }
    x = acts[site]
    ceiling = train_head(x[strong], y[strong], cfg.loss("xent"), cfg.student_cfg, seed)
    student = train_head(x[strong], weak_p[strong], cfg.loss(loss), cfg.student_cfg, seed)
    return {"student": student.probs(x[test]), "ceiling": ceiling.probs(x[test])}


def _task_summary(
    task: BinaryTask,
    sizes: dict[str, int],
    site: str,
    cells: dict[tuple[str, int], dict[str, Any]],
    cfg: W2SConfig,
) -> dict[str, Any]:
    first = next(iter(cells.values()))
    weak = first["models"]["weak"]
    flags = []
    if weak["auroc_ci"][0] <= 0.5:
        flags.append(FLAG_WEAK_AT_CHANCE)
    losses: dict[str, Any] = {}
    for loss in cfg.losses:
        rows = [cells[(loss, s)] for s in cfg.seeds]
        stack = {
            k: np.asarray([r["correct"][k] for r in rows]) for k in ("weak", "student", "ceiling")
        }
        pooled = performance_gap_recovered(
            stack["weak"], stack["student"], stack["ceiling"], n_resamples=cfg.n_resamples
        )
        per_seed = [PerformanceGapRecovered(**_pgr_fields(r["pgr"])) for r in rows]
        losses[loss] = {
            "pgr": pooled.to_dict(),
            "pgr_over_seeds": seed_interval(per_seed, n_resamples=cfg.n_resamples),
            "student_accuracy": [r["models"]["student"]["accuracy"] for r in rows],
            "ceiling_accuracy": [r["models"]["ceiling"]["accuracy"] for r in rows],
            "student_auroc": [r["models"]["student"]["auroc"] for r in rows],
            "ceiling_auroc": [r["models"]["ceiling"]["auroc"] for r in rows],
            "seeds": list(cfg.seeds),
            "cells": [{k: v for k, v in r.items() if k != "correct"} for r in rows],
        }
        if not pooled.defined and FLAG_NO_GAP not in flags:
            flags.append(FLAG_NO_GAP)
    return {
        "source": task.source,
        "rows": len(task),
        "rows_before_cap": task.meta.get("rows_before_cap", len(task)),
        "positive": int(sum(task.labels)),
        "split_sizes": sizes,
        "site": site,
        "weak": weak,
        "weak_label_accuracy": first["weak_label_accuracy"],
        "flags": flags,
        "losses": losses,
    }


def _pgr_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "defined"}


def _bar(enabled: bool, total: int, name: str) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"w2s {name}", unit="cell")
