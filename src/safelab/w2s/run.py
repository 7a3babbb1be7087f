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

from safelab.config import comma_list, comma_numbers, option
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


def comma_ints(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)`` (the ``--seeds`` option)."""
    return comma_numbers(text, "--seeds", int)


@dataclass(frozen=True)
class W2SConfig:
    """Everything that defines a run; saved in metrics.json and hashed into every cell.

    The CLI's options are made from these fields (``student_cfg`` and ``lora_cfg`` are set from
    the command line through ``--epochs`` / ``--lr``, whose defaults are ``StudentConfig``'s).
    """

    tasks: tuple[str, ...] = option(
        (),
        "comma-separated tasks: truth-cities, lie-detector, ... (safelab.w2s.tasks), "
        "hub:sciq|boolq|anthropic_hh (needs `datasets`), or a text,label CSV/JSONL",
        flag="--task",
        parse=comma_list,
    )
    weak: str = option("bow", "weak supervisor: bow, probe or probe:<site>")
    student: str = option("default", "the strong model (default: SmolLM2-135M)")
    """The strong model (a model spec for :func:`safelab.models.loading.load_model`)."""
    site: str = option("auto", "student feature site (auto: 70%% depth)")
    """The student's feature site; ``auto`` is ``blocks.{int(0.7 * n_layers)}.resid_post``."""
    position: str = option("last", "last token or mean over the text", choices=("last", "mean"))
    """``last`` token or ``mean`` over the text's tokens."""
    losses: tuple[str, ...] = option(
        tuple(LOSSES), "comma-separated: xent, aux", flag="--loss", parse=comma_list
    )
    seeds: tuple[int, ...] = option(
        (0, 1, 2), "training seeds (splits are fixed)", parse=comma_ints
    )
    max_rows: int = option(DEFAULT_MAX_ROWS, "rows per task (seeded)")
    aux_coef: float = option(0.5, "final weight of the aux term")
    warmup_frac: float = option(0.2, "aux weight warm-up share")
    student_cfg: StudentConfig = field(default_factory=StudentConfig)
    lora: bool = option(
        False,
        "student and ceiling fine-tune the model with LoRA (peft) + a head: GPU-sized work",
    )
    """Fine-tune the strong model with LoRA + head instead of a head on frozen activations."""
    lora_cfg: LoraStudentConfig = field(default_factory=LoraStudentConfig)
    n_resamples: int = option(DEFAULT_RESAMPLES, "bootstrap resamples", flag="--resamples")
    data_root: str | None = option(None, "shared data folder (default: $SAFELAB_DATA)")
    cache: str | None = option(None, "activation cache (default $SAFELAB_CACHE)")
    batch_size: int = option(32, "inputs per forward pass")

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise lists (a notebook's, a JSON's) once
        for name in ("tasks", "losses", "seeds"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = comma_ints(value) if name == "seeds" else comma_list(value)
            set_(self, name, tuple(value))
        if isinstance(self.student_cfg, dict):
            set_(self, "student_cfg", StudentConfig(**self.student_cfg))
        if isinstance(self.lora_cfg, dict):
            set_(self, "lora_cfg", LoraStudentConfig(**self.lora_cfg))
        if not self.tasks:
            raise SafelabError("no task: give --task (e.g. truth-cities,lie-detector)")
        if not self.seeds:
            raise SafelabError("no seeds: give at least one --seeds value")
        for loss in self.losses:
            LossConfig(loss)
        parse_weak(self.weak)
        if self.position not in ("last", "mean"):
            raise SafelabError(f"unknown position {self.position!r}: use last or mean")

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


INPUTS = "inputs.safetensors"
"""Per task: the student's features at its site, the weak labels and the split (what a cell reads)."""


@dataclass(frozen=True)
class W2SCell:
    """One (task, loss, seed) cell: names and paths only (a Ray worker loads the rest itself)."""

    key: str
    """``<task slug>/<loss>-seed<k>``: the cell's file is ``<out>/cells/<key>.json``."""
    config_key: str
    """The hash of everything that decides the cell (checked on resume)."""
    cfg: W2SConfig
    task: str
    task_name: str
    loss: str
    seed: int
    site: str
    inputs: str


def w2s_cell(cell: W2SCell, model: WhiteBoxModel | None = None) -> dict[str, Any]:
    """Train the ceiling and the student of one cell and score all three on test.

    Reads its task's inputs file; a LoRA student also loads the strong model by name (``model``
    is the driver's own, given when the cell runs in this process).
    """
    from safetensors.torch import load_file

    cfg = cell.cfg
    arrays = load_file(cell.inputs)
    y, weak_p = arrays["labels"].numpy(), arrays["weak_p"].numpy()
    strong, test = arrays["strong_train"].numpy(), arrays["test"].numpy()
    if cfg.lora:
        task = cap_rows(load_task(cell.task, cfg.data_root), cfg.max_rows)
        if model is None:
            from safelab.models.loading import load_model

            model = load_model(cfg.student, dtype="float32")
        trained = _lora_student(
            cfg, model, task, cell.site, weak_p, strong, test, cell.loss, cell.seed
        )
    else:
        x = arrays["x"]
        ceiling = train_head(x[strong], y[strong], cfg.loss("xent"), cfg.student_cfg, cell.seed)
        student = train_head(
            x[strong], weak_p[strong], cfg.loss(cell.loss), cfg.student_cfg, cell.seed
        )
        trained = {"student": student.probs(x[test]), "ceiling": ceiling.probs(x[test])}
    probs = {"weak": weak_p[test], **trained}
    result: dict[str, Any] = {
        "key": cell.config_key,
        "task": cell.task_name,
        "loss": cell.loss,
        "seed": cell.seed,
        "site": cell.site,
        "student_kind": "lora" if cfg.lora else "linear_head",
        "weak_label_mean": float(weak_p[strong].mean()),
        "weak_label_accuracy": float(((weak_p[strong] > 0.5) == y[strong]).mean()),
        "models": {
            k: _model_metrics(p, y[test], cfg.n_resamples, cell.seed) for k, p in probs.items()
        },
        "correct": {k: ((p > 0.5) == y[test]).astype(int).tolist() for k, p in probs.items()},
    }
    c = {k: ((p > 0.5) == y[test]).astype(int) for k, p in probs.items()}
    result["pgr"] = performance_gap_recovered(
        c["weak"], c["student"], c["ceiling"], n_resamples=cfg.n_resamples, seed=cell.seed
    ).to_dict()
    return result


def _write_inputs(
    path: Path, task: BinaryTask, x: Any, weak_p: np.ndarray, strong: np.ndarray, test: np.ndarray
) -> None:
    """The inputs file of a task's cells (temp file + rename)."""
    import os

    import torch
    from safetensors.torch import save_file

    from safelab.files import tmp_path_beside

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_beside(path)
    try:
        arrays = {
            "x": x.contiguous(),
            "labels": torch.as_tensor(np.asarray(task.labels, dtype=np.int64)),
            "weak_p": torch.from_numpy(np.ascontiguousarray(weak_p)),
            "strong_train": torch.as_tensor(strong, dtype=torch.int64),
            "test": torch.as_tensor(test, dtype=torch.int64),
        }
        save_file(arrays, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class RunSummary:
    """A finished weak-to-strong run: ``metrics.json``'s content and how many cells ran."""

    metrics: dict[str, Any]
    computed: int
    reused: int
    path: Path

    def summary_lines(self) -> list[str]:
        lines = []
        for name, t in self.metrics["tasks"].items():
            flags = f"  [{', '.join(t['flags'])}]" if t["flags"] else ""
            lines.append(f"{name}: weak acc {t['weak']['accuracy']:.3f}{flags}")
            for loss, r in t["losses"].items():
                pgr = PerformanceGapRecovered(**_pgr_fields(r["pgr"]))
                student = sum(r["student_accuracy"]) / len(r["student_accuracy"])
                ceiling = sum(r["ceiling_accuracy"]) / len(r["ceiling_accuracy"])
                lines.append(f"  {loss:5s} student {student:.3f}  ceiling {ceiling:.3f}  PGR {pgr}")
        return lines

    def write_report(self) -> Path:
        from safelab.w2s.report import write_w2s_report

        return write_w2s_report(self.metrics, self.path.parent / "report.html")


W2SResult = RunSummary


def run_experiment(
    cfg: W2SConfig,
    out: str | Path,
    *,
    model: WhiteBoxModel | None = None,
    progress: bool = True,
    log: Any = print,
    ray: str | None = None,
) -> RunSummary:
    """Run (or resume) every (task, loss, seed) cell and write ``<out>/metrics.json``.

    ``ray`` (``"local"`` or a cluster address) runs each cell as a Ray task
    (:func:`safelab.distributed.run_grid`); a LoRA cell asks for a GPU there.
    """
    import functools

    import torch

    from safelab.distributed import ONE_CPU, Resources, run_grid

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
        name = slug(task.name)
        inputs = out / "cells" / name / INPUTS
        cells = [
            W2SCell(
                key=f"{name}/{loss}-seed{s}",
                config_key=_cell_key(cfg, task, site, loss, s),
                cfg=cfg,
                task=spec,
                task_name=task.name,
                loss=loss,
                seed=s,
                site=site,
                inputs=str(inputs),
            )
            for loss in cfg.losses
            for s in cfg.seeds
        ]
        done = [_read_cell(out / "cells" / f"{c.key}.json", c.config_key) for c in cells]
        todo = sum(d is None for d in done)
        if todo:
            acts = _features(model, task, sites, cfg, progress)
            weak_p = weak_probs(weak_spec, task.texts, task.labels, splits.weak_train, acts)
            strong, test = np.asarray(splits.strong_train), np.asarray(splits.test)
            x = acts[site] if not cfg.lora else torch.zeros(0)
            _write_inputs(inputs, task, x, np.asarray(weak_p), strong, test)
        fn = w2s_cell if ray is not None else functools.partial(w2s_cell, model=model)
        resources = Resources(num_cpus=1, num_gpus=1) if cfg.lora else ONE_CPU
        rows = run_grid(
            fn, cells, out, ray=ray, resources=resources, progress=progress, desc=f"w2s {task.name}"
        )
        computed += todo
        reused += len(cells) - todo
        by_cell = {(c.loss, c.seed): r for c, r in zip(cells, rows, strict=True)}
        results[task.name] = _task_summary(task, splits.sizes(), site, by_cell, cfg)
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


def _lora_student(
    cfg: W2SConfig,
    model: WhiteBoxModel,
    task: BinaryTask,
    site: str,
    weak_p: np.ndarray,
    strong: np.ndarray,
    test: np.ndarray,
    loss: str,
    seed: int,
) -> dict[str, np.ndarray]:
    """Test-set ``p(1)`` of the LoRA student (weak labels, ``loss``) and ceiling (ground truth)."""
    y = np.asarray(task.labels)
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
