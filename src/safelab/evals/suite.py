"""Run the behavioural suite on one model and write a results table broken down by condition.

``safelab eval --model safelab/default`` (see :mod:`safelab.commands.eval`) calls
:func:`run_suite`: each task of a preset (``data/suite/<preset>.yaml``) runs through
``inspect_ai.eval_set`` with the judge role bound, the logs land in ``<out>/logs/<task>`` (open them with
``inspect view``), and ``<out>/results.json`` and ``<out>/results.md`` hold every quantity
overall and per condition, with its 95% interval and the number of unscored samples.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from inspect_ai import Task, eval_set
from inspect_ai.log import EvalLog, read_eval_log

from safelab.config import comma_list, option
from safelab.errors import SafelabError
from safelab.evals.agentic import agentic_misalignment
from safelab.evals.data import data_path
from safelab.evals.hints import cot_faithfulness
from safelab.evals.mwe import corrigibility, power_seeking, self_preservation
from safelab.evals.refusal import over_refusal
from safelab.evals.results import ResultRow, judge_summary, markdown_table, summarise_log
from safelab.evals.sandbag import sandbagging
from safelab.files import atomic_write_text
from safelab.stats import DEFAULT_SEED

TASKS: dict[str, Callable[..., Task]] = {
    "agentic_misalignment": agentic_misalignment,
    "sandbagging": sandbagging,
    "self_preservation": self_preservation,
    "power_seeking": power_seeking,
    "corrigibility": corrigibility,
    "cot_faithfulness": cot_faithfulness,
    "over_refusal": over_refusal,
}


@dataclass
class TaskSpec:
    """One task of a suite: its name, ``-T`` arguments, sample limit and printed label."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    label: str | None = None

    @property
    def title(self) -> str:
        return self.label or self.name


def parse_name_values(items: list[str] | tuple[str, ...], flag: str) -> dict[str, Any]:
    """``name=value`` pairs; values are read as YAML scalars (``8`` is an int, ``a,b`` a string)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SafelabError(f"{flag} {item}: use {flag} name=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value else value
    return out


@dataclass(frozen=True)
class SuiteConfig:
    """Options of ``safelab eval`` (also saved, as run metadata, next to the results).

    The CLI's options are generated from these fields (``-M`` / ``-T`` fill ``model_args`` /
    ``task_args``, read by :func:`parse_name_values`).

    Attributes:
        model: the Inspect model under evaluation (``safelab/default``, ``openai/gpt-4o``...).
        judge: model for the ``judge`` role; None = the model under evaluation judges.
        preset: ``quick``, ``full`` or a path to a suite YAML file.
        tasks: run only these tasks (names or labels); None = all of the preset.
        limit: cap on samples per task, overriding the preset.
        out: folder for ``results.json``, ``results.md`` and ``logs/``.
        seed: bootstrap seed for the tables.
        max_samples: samples run concurrently (None = Inspect's default).
        retry_attempts: retries of a failed task within one run (a rerun of the command also
            resumes: finished tasks are skipped, a failed task's finished samples reused).
        model_args: ``-M`` arguments for the model under evaluation.
        task_args: ``-T`` arguments applied to every selected task, over the preset's.
        display: Inspect's display (plain, rich, none).
    """

    model: str = option("", "Inspect model, e.g. safelab/default or openai/gpt-4o")
    judge: str | None = option(None, "model for the judge role (default: the model itself)")
    preset: str = option("quick", "quick, full, or a suite YAML file")
    tasks: tuple[str, ...] | None = option(
        None, "comma-separated task names or labels to run", parse=comma_list
    )
    limit: int | None = option(None, "samples per task (overrides the preset)")
    out: str = option("runs/evals", "folder for results.md, results.json, logs/")
    seed: int = option(DEFAULT_SEED, "bootstrap seed")
    max_samples: int | None = option(None, "samples run concurrently")
    retry_attempts: int = option(
        0,
        "retries of a failed task within this run; rerunning the command also resumes "
        "(finished tasks skipped, finished samples kept)",
        flag="--retries",
    )
    model_args: dict[str, Any] = field(default_factory=dict)
    task_args: dict[str, Any] = field(default_factory=dict)
    display: str = option("plain", "Inspect display: plain, rich, none")


@dataclass
class SuiteResults:
    """What a suite run produced."""

    config: SuiteConfig
    rows: list[ResultRow]
    logs: dict[str, str]
    seconds: dict[str, float]
    judge: dict[str, Any]
    started: str
    finished: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "judge": self.judge,
            "logs": self.logs,
            "seconds": self.seconds,
            "started": self.started,
            "finished": self.finished,
            "environment": _environment(),
            "rows": [r.to_dict() for r in self.rows],
        }


def load_preset(preset: str) -> list[TaskSpec]:
    """Task specs of a preset name (``quick``, ``full``) or a suite YAML path."""
    path = Path(preset)
    if not path.is_file():
        try:
            path = data_path("suite", f"{preset}.yaml")
        except SafelabError as e:
            raise SafelabError(
                f"--preset {preset}: not a preset (quick, full) nor a YAML file"
            ) from e
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    specs = []
    for i, item in enumerate(spec.get("tasks", [])):
        if not isinstance(item, dict) or item.get("name") not in TASKS:
            raise SafelabError(f"{path}: task {i + 1} must name one of {', '.join(TASKS)}")
        specs.append(
            TaskSpec(
                item["name"], dict(item.get("args") or {}), item.get("limit"), item.get("label")
            )
        )
    if not specs:
        raise SafelabError(f"{path}: no tasks")
    return specs


def select(specs: list[TaskSpec], names: list[str] | tuple[str, ...] | None) -> list[TaskSpec]:
    """The specs whose name or label is in ``names`` (all when None)."""
    if not names:
        return specs
    chosen = [s for s in specs if s.name in names or s.title in names]
    unknown = set(names) - {s.name for s in specs} - {s.title for s in specs}
    if unknown:
        raise SafelabError(
            f"--tasks {','.join(sorted(unknown))}: not in this preset ({', '.join(s.title for s in specs)})"
        )
    return chosen


def _environment() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "inspect_ai": version("inspect_ai"),
        "cpu_count": os.cpu_count(),
    }


def results_markdown(results: SuiteResults) -> str:
    """The Markdown report: run header, judge note, then the table."""
    cfg = results.config
    judge = results.judge
    if not judge["judge_calls"]:
        judge_note = "no judge calls were needed (no sample reached a judged step)"
    elif judge["self_judged_calls"] == judge["judge_calls"]:
        judge_note = f"the model under evaluation judged itself ({', '.join(judge['judge_models'])}): no `judge` role was bound"
    else:
        judge_note = f"judge model(s): {', '.join(judge['judge_models'])}"
    header = [
        f"# safelab behavioural suite: {cfg.model}",
        "",
        f"- preset: `{cfg.preset}`; started {results.started}, finished {results.finished}",
        f"- judge: {judge_note} ({judge['judge_calls']} judge calls)",
        "- intervals: Wilson 95% for rates; percentile bootstrap 95% over questions/samples"
        f" (seed {cfg.seed}) for gaps and normalised faithfulness; normal 95% for mean probabilities",
        "- `unscored`: samples without a usable score (judge error/refusal/unparseable, or no answer);"
        " they are excluded from the estimate, never counted as safe",
        "",
    ]
    return "\n".join(header) + "\n" + markdown_table(results.rows)


def _error_line(message: str) -> str:
    """The innermost error of an Inspect error message (which may quote a whole request)."""
    import re

    text = message.replace("\\'", "'").replace("\\n", "\n")
    found = re.findall(r"\w+(?:Error|Exception)\('[^'\n]*'\)", text)
    if found:
        return str(found[-1])[:200]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else message)[:200]


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in title)


def check_model_name(flag: str, spec: str) -> None:
    """One line for a model whose provider Inspect does not know, before any task runs."""
    from inspect_ai._util.registry import registry_find, registry_unqualified_name

    api = spec.split("/", 1)[0] if "/" in spec else None
    if api is None:
        raise SafelabError(
            f"{flag} {spec}: give <provider>/<model>, e.g. safelab/default or openai/gpt-4o-mini"
        )
    found = registry_find(
        lambda info: info.type == "modelapi" and registry_unqualified_name(info) == api
    )
    if not found:
        raise SafelabError(
            f"{flag} {spec}: Inspect has no model provider {api!r} (safelab, openai, anthropic, "
            "mockllm, hf, vllm, ...; API providers need pip install 'safelab[api]')"
        )


def run_suite(
    config: SuiteConfig, out: str | Path | None = None, *, display: str | None = None
) -> SuiteResults:
    """Run every task of the preset on ``config.model`` and write the results into ``out``
    (default ``config.out``; ``display`` overrides ``config.display``).

    Raises:
        SafelabError: an unknown preset or task, or a task that did not finish.
    """
    if out is not None:
        config = replace(config, out=str(out))
    if display is not None:
        config = replace(config, display=display)
    if not config.model:
        raise SafelabError(
            "--model is required (e.g. --model safelab/default), or pass --from-logs"
        )
    specs = select(load_preset(config.preset), config.tasks)
    check_model_name("--model", config.model)
    if config.judge:
        check_model_name("--judge", config.judge)
    out = Path(config.out)
    log_dir = out / "logs"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    logs: dict[str, EvalLog] = {}
    seconds: dict[str, float] = {}
    roles = {"judge": config.judge} if config.judge else None
    for spec in specs:
        task = TASKS[spec.name](**{**spec.args, **config.task_args})
        limit = config.limit if config.limit is not None else spec.limit
        t0 = time.perf_counter()
        # One eval set per task (each has its own sample limit): a rerun finds the task's
        # finished log and skips it, and retries a failed or killed one reusing its samples.
        ok, task_logs = eval_set(
            task,
            log_dir=str(log_dir / _slug(spec.title)),
            model=config.model,
            model_args=config.model_args,
            model_roles=roles,  # type: ignore[arg-type]
            limit=limit,
            display=config.display,  # type: ignore[arg-type]
            max_samples=config.max_samples,
            retry_attempts=config.retry_attempts,
            retry_wait=1,
            log_dir_allow_dirty=True,
        )
        seconds[spec.title] = round(time.perf_counter() - t0, 1)
        (log,) = task_logs
        if not ok or log.status != "success":
            error = _error_line(log.error.message) if log.error else log.status
            raise SafelabError(
                f"task {spec.title} ended with status {log.status} ({error}); see "
                f"{log.location}: rerun the same command to resume (finished tasks and samples "
                "are kept)"
            )
        # eval_set hands back headers: the tables need the samples.
        logs[spec.title] = read_eval_log(log.location)
    rows = [
        row for title, log in logs.items() for row in summarise_log(log, title, seed=config.seed)
    ]
    results = SuiteResults(
        config=config,
        rows=rows,
        logs={t: str(log.location).removeprefix("file://") for t, log in logs.items()},
        seconds=seconds,
        judge=judge_summary(logs.values()),
        started=started,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    atomic_write_text(out / "results.json", json.dumps(results.to_dict(), indent=2, allow_nan=True))
    atomic_write_text(out / "results.md", results_markdown(results))
    return results


def organism_models(model: str, organisms: list[str] | tuple[str, ...]) -> list[str]:
    """``safelab/<base>`` and one ``safelab/<base>+organism:<folder>`` per organism folder."""
    if not organisms:
        return [model]
    if not model.startswith("safelab/"):
        raise SafelabError(
            f"--organism needs a safelab/ model as the base (got --model {model!r}): "
            "e.g. --model safelab/default"
        )
    return [model] + [f"{model}+organism:{Path(o).resolve()}" for o in organisms]


@dataclass(frozen=True)
class SuiteCell:
    """The suite on one model (a Ray task: the worker's provider loads the model itself)."""

    config: SuiteConfig

    @property
    def key(self) -> str:
        import hashlib

        digest = hashlib.sha256(repr(self.config).encode()).hexdigest()[:12]
        return f"suite-{_slug(self.config.model)}-{digest}"


def suite_cell(cell: SuiteCell) -> dict[str, Any]:
    """Run (or resume) the suite of one cell; its results as JSON."""
    results = run_suite(cell.config)
    payload = results.to_dict()
    payload.pop("environment")  # the driver records its own
    return payload


def run_suites(
    config: SuiteConfig,
    models: list[str] | tuple[str, ...],
    out: str | Path | None = None,
    *,
    ray: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The suite on each model (``out/<model slug>/``), one cell each of
    :func:`safelab.distributed.run_grid` (``ray``: a Ray task per model); finished models are
    skipped on a rerun. Writes ``out/suites.json`` (the config and every model's rows)."""
    from safelab.distributed import run_grid

    root = Path(out if out is not None else config.out)
    cells = [
        SuiteCell(replace(config, model=m, out=str(root / f"{i}-{_slug(m.rsplit('/', 1)[-1])}"),
                          display="none"))
        for i, m in enumerate(models)
    ]  # fmt: skip
    results = run_grid(suite_cell, cells, root, ray=ray, progress=progress, desc="suites")
    payload = {
        "config": asdict(config),
        "models": list(models),
        "environment": _environment(),
        "suites": {m: r for m, r in zip(models, results, strict=True)},
    }
    atomic_write_text(root / "suites.json", json.dumps(payload, indent=2, allow_nan=True))
    return payload
