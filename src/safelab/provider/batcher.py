"""One worker thread per loaded model that batches concurrent Inspect samples.

Jobs share a batch when their decoding settings and interventions are equal, so a steered target
and an unsteered judge on the same weights never leak hooks into each other.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from safelab.interp.probes import LinearProbe
from safelab.interp.readout import TokenReader
from safelab.interp.steering import SteerSpec
from safelab.models.generation import GenerationRequest, GenerationResult, generate_batch
from safelab.models.loading import load_model
from safelab.models.whitebox import WhiteBoxModel


@dataclass(frozen=True)
class Interventions:
    """What a model API instance applies and reads around every generate call."""

    steer: SteerSpec | None = None
    capture: tuple[str, ...] = ()
    probes: tuple[tuple[str, LinearProbe], ...] = ()
    readers: tuple[tuple[str, TokenReader], ...] = ()
    capture_vectors: bool = True

    def enter(self, model: WhiteBoxModel, stack: ExitStack) -> None:
        if self.steer is not None:
            stack.enter_context(self.steer.apply(model))

    @property
    def reads(self) -> bool:
        return bool(self.capture or self.probes or self.readers)


@dataclass
class _Job:
    text: str
    request: GenerationRequest
    interventions: Interventions
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[GenerationResult, dict[str, Any]]]
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.request, id(self.interventions))


class Batcher:
    """Drains queued jobs, groups compatible ones, runs each group as one ``generate_batch``.

    A batch closes when no job has arrived for ``wait_s`` (Inspect's own hf provider waits 2 s;
    a quarter second keeps sequential agent turns responsive while loaded CPUs still fill
    batches).
    """

    def __init__(self, model: WhiteBoxModel, max_batch: int, wait_s: float = 0.25) -> None:
        self.model = model
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="safelab-batcher")
        self.thread.start()

    async def submit(
        self, text: str, request: GenerationRequest, iv: Interventions
    ) -> tuple[GenerationResult, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        job = _Job(text, request, iv, loop, loop.create_future())
        self.queue.put(job)
        return await job.future

    def _run(self) -> None:
        while True:
            jobs = [self.queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get(timeout=self.wait_s))
                except queue.Empty:
                    break
            groups: dict[tuple[Any, ...], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                self._run_group(group)

    def _run_group(self, jobs: list[_Job]) -> None:
        iv = jobs[0].interventions
        try:
            with ExitStack() as stack:
                iv.enter(self.model, stack)
                results = generate_batch(self.model, [j.text for j in jobs], jobs[0].request)
                records: list[dict[str, Any]] = [{} for _ in jobs]
                if iv.reads:
                    from safelab.interp.readout import read_samples

                    records = read_samples(
                        self.model,
                        [r.prompt_ids for r in results],
                        [r.completion_ids for r in results],
                        list(iv.capture),
                        dict(iv.probes),
                        readers=dict(iv.readers),
                        vectors=iv.capture_vectors,
                    )
            for job, res, rec in zip(jobs, results, records, strict=True):
                _resolve(job, (res, rec), None)
        except BaseException as e:  # deliver every failure to the awaiting samples
            for job in jobs:
                _resolve(job, None, e)


def _resolve(job: _Job, value: Any, error: BaseException | None) -> None:
    def set_() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    job.loop.call_soon_threadsafe(set_)


_MODELS: dict[tuple[str, str, str | None], WhiteBoxModel] = {}
_BATCHERS: dict[int, Batcher] = {}
_LOCK = threading.Lock()


def shared_model(spec: str, dtype: str, device: str | None) -> WhiteBoxModel:
    """Load once per process: several roles or tasks on the same weights share one copy."""
    key = (spec, dtype, device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(spec, dtype=dtype, device=device)
        return _MODELS[key]


def share_model(
    model: WhiteBoxModel, spec: str, dtype: str = "auto", device: str | None = None
) -> None:
    """Let ``safelab/<spec>`` in this process reuse a model that is already loaded."""
    with _LOCK:
        _MODELS[(spec, dtype, device)] = model


def shared_batcher(model: WhiteBoxModel, max_batch: int) -> Batcher:
    with _LOCK:
        if id(model) not in _BATCHERS:
            _BATCHERS[id(model)] = Batcher(model, max_batch)
        return _BATCHERS[id(model)]
