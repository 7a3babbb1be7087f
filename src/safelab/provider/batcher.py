"""One worker thread per loaded model that batches concurrent Inspect samples.

Continuous batching (the default): each sample's prompt joins a running decode batch as soon as
it arrives (its longest cached prefix reused, :mod:`safelab.models.kvcache`) and leaves it when
it finishes, so samples never wait for a batch to fill or for the longest one to end
(:class:`safelab.models.decode.DecodeBatch`). Static batching (``-M batching=static``): samples
that arrive together run as one padded ``generate`` call, as before.

Jobs share a batch only when their interventions are the same instance's, so a steered target
and an unsteered judge on the same weights never leak hooks into each other; each running batch
is stepped with its own interventions entered.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from safelab.interp.probes import LinearProbe
from safelab.interp.readout import TokenReader
from safelab.interp.steering import SteerSpec
from safelab.models.decode import DecodeBatch, Row
from safelab.models.generation import (
    GenerationRequest,
    GenerationResult,
    encode_prompts,
    generate_batch,
    use_decode_loop,
)
from safelab.models.kvcache import PrefixCache, PrefixCacheConfig
from safelab.models.loading import load_model
from safelab.models.openmp import release_workers
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
    continuous: bool = True
    use_cache: bool = True
    key: tuple[Any, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.request, id(self.interventions))


class ThreadPolicy:
    """How many torch threads the batcher thread computes with (``-M threads``).

    ``None`` or ``torch`` leaves torch's setting alone. A number fixes it. ``auto`` uses the cores other
    processes leave free: every ``every_s`` seconds, the 1-minute load average minus this
    process's own recent CPU use estimates the other processes' demand, and the thread count is
    ``cores - that`` (at least 1, at most the cores). Two threads on two cores that another
    process also wants make every parallel region wait for a descheduled thread; one thread
    then runs faster (``bench/generate.py`` measures both).
    """

    def __init__(self, every_s: float = 5.0) -> None:
        self.setting: str | None = None
        self.every_s = every_s
        self.current: int | None = None
        self._last = (time.monotonic(), time.process_time())

    def set(self, setting: str | None) -> None:
        if setting is not None:
            self.setting = setting

    def apply(self) -> None:
        import torch

        if self.setting is None or self.setting == "torch":
            return
        if self.setting != "auto":
            want = int(self.setting)
        else:
            now, cpu = time.monotonic(), time.process_time()
            if self.current is not None and now - self._last[0] < self.every_s:
                return
            mine = (cpu - self._last[1]) / max(now - self._last[0], 1e-6)
            self._last = (now, cpu)
            cores = os.cpu_count() or 1
            others = max(0.0, os.getloadavg()[0] - mine) if hasattr(os, "getloadavg") else 0
            want = max(1, min(cores, round(cores - others)))
        if want != self.current:
            torch.set_num_threads(want)
            self.current = want


@dataclass
class _Running:
    """The running decode batch of one interventions instance."""

    interventions: Interventions
    batch: DecodeBatch


class Batcher:
    """Drains queued jobs: continuous ones join a running decode batch, static ones are grouped
    into one ``generate_batch`` call each (see the module doc).

    A static batch closes when no job has arrived for ``wait_s`` (Inspect's own hf provider
    waits 2 s; a quarter second keeps sequential agent turns responsive while loaded CPUs still
    fill batches). Continuous jobs join at the next decode step; when the batcher is idle, jobs
    arriving within ``gather_s`` of each other are collected first, so that samples sent together
    prefill together.
    """

    def __init__(
        self,
        model: WhiteBoxModel,
        max_batch: int,
        wait_s: float = 0.25,
        cache: PrefixCacheConfig | None = None,
        gather_s: float = 0.02,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.gather_s = gather_s
        self.cache = PrefixCache(cache) if cache is not None else None
        self.threads = ThreadPolicy()
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.running: dict[int, _Running] = {}
        self.waiting: deque[_Job] = deque()
        self.thread = threading.Thread(target=self._run, daemon=True, name="safelab-batcher")
        self.thread.start()

    def use_cache(self, cfg: PrefixCacheConfig) -> None:
        """Make sure the shared cache holds at least ``cfg.max_mb`` (the largest asked wins)."""
        if self.cache is None:
            self.cache = PrefixCache(cfg)
        elif cfg.max_mb > self.cache.cfg.max_mb:
            self.cache.cfg = cfg
            self.cache.max_bytes = int(cfg.max_mb * 2**20)

    async def submit(
        self,
        text: str,
        request: GenerationRequest,
        iv: Interventions,
        *,
        continuous: bool = True,
        use_cache: bool = True,
    ) -> tuple[GenerationResult, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        job = _Job(text, request, iv, loop, loop.create_future(), continuous, use_cache)
        # The submitting thread waits while the batcher computes: its idle OpenMP workers would
        # make the batcher's workers sleep between parallel regions (safelab.models.openmp).
        release_workers()
        self.queue.put(job)
        return await job.future

    def _run(self) -> None:
        while True:
            self.threads.apply()
            busy = any(len(r.batch) for r in self.running.values()) or self.waiting
            if not busy and self.queue.empty():
                release_workers()  # idle: free this thread's OpenMP workers (models.openmp)
            jobs = [] if busy else [self.queue.get()]
            if jobs:
                # Collect what arrives with the first job: a static batch waits ``wait_s`` for
                # each next one; continuous samples sent together arrive a few ms apart and are
                # gathered (``gather_s``) so they prefill as one batch, not the first alone.
                wait = self.gather_s if jobs[0].continuous else self.wait_s
                while len(jobs) < self.max_batch:
                    try:
                        jobs.append(self.queue.get(timeout=wait))
                    except queue.Empty:
                        break
            while True:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            static: dict[tuple[Any, ...], list[_Job]] = {}
            for job in jobs:
                if job.continuous:
                    self.waiting.append(job)
                else:
                    static.setdefault(job.key, []).append(job)
            for group in static.values():
                for start in range(0, len(group), self.max_batch):
                    self._run_group(group[start : start + self.max_batch])
            self._admit()
            for running in list(self.running.values()):
                if len(running.batch):
                    self._step(running)

    # -- continuous batching ----------------------------------------------------------------
    def _admit(self) -> None:
        """Prefill waiting jobs into their running batch while it has room: the jobs of one
        interventions instance that wait together join together (one batched prefill, shared
        prefixes computed once, :meth:`DecodeBatch.add_many`)."""
        groups: dict[int, list[_Job]] = {}
        for _ in range(len(self.waiting)):
            job = self.waiting.popleft()
            iv = job.interventions
            running = self.running.get(id(iv))
            room = self.max_batch - (len(running.batch) if running is not None else 0)
            if len(groups.get(id(iv), [])) >= room:
                self.waiting.append(job)
                continue
            groups.setdefault(id(iv), []).append(job)
        for group in groups.values():
            self._admit_group(group)

    def _admit_group(self, jobs: list[_Job]) -> None:
        iv = jobs[0].interventions
        running = self.running.get(id(iv))
        try:
            with ExitStack() as stack:
                iv.enter(self.model, stack)
                loop_ok = use_decode_loop(self.model)
                if loop_ok and running is None:
                    scope = self.model.prefix_scope() if jobs[0].use_cache else None
                    batch = DecodeBatch(self.model, self.cache, scope)
                    running = self.running[id(iv)] = _Running(iv, batch)
                if loop_ok and running is not None:
                    ids = encode_prompts(self.model, [j.text for j in jobs], [True] * len(jobs))
                    rows = running.batch.add_many(ids, [j.request for j in jobs], jobs)
                    done = [row for row in rows if row.done]
                    if done:
                        self._finish(iv, done)
        except BaseException as e:  # deliver every failure to the awaiting samples
            for job in jobs:
                _resolve(job, None, e)
            return
        if not loop_ok:  # opaque hooks or an unsupported architecture: the padded call
            for job in jobs:
                self._run_group([job])

    def _step(self, running: _Running) -> None:
        iv = running.interventions
        try:
            with ExitStack() as stack:
                iv.enter(self.model, stack)
                finished = running.batch.step()
                if finished:
                    self._finish(iv, finished)
        except BaseException as e:
            for row in running.batch.rows:
                _resolve(row.tag, None, e)
            del self.running[id(iv)]

    def _finish(self, iv: Interventions, rows: list[Row]) -> None:
        """Read what the interventions ask for (hooks still entered) and resolve the samples."""
        results = [r.result() for r in rows]
        records = self._read(iv, results)
        for row, res, rec in zip(rows, results, records, strict=True):
            _resolve(row.tag, (res, rec), None)

    def _read(self, iv: Interventions, results: list[GenerationResult]) -> list[dict[str, Any]]:
        if not iv.reads:
            return [{} for _ in results]
        from safelab.interp.readout import read_samples

        return read_samples(
            self.model,
            [r.prompt_ids for r in results],
            [r.completion_ids for r in results],
            list(iv.capture),
            dict(iv.probes),
            readers=dict(iv.readers),
            vectors=iv.capture_vectors,
        )

    def _run_group(self, jobs: list[_Job]) -> None:
        iv = jobs[0].interventions
        try:
            with ExitStack() as stack:
                iv.enter(self.model, stack)
                results = generate_batch(self.model, [j.text for j in jobs], jobs[0].request)
                records = self._read(iv, results)
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


_MODELS: dict[tuple[str, str, str | None, str | None], WhiteBoxModel] = {}
_BATCHERS: dict[int, Batcher] = {}
_LOCK = threading.Lock()


def shared_model(
    spec: str, dtype: str, device: str | None, linear: str | None = None
) -> WhiteBoxModel:
    """Load once per process: several roles or tasks on the same weights share one copy."""
    key = (spec, dtype, device, linear)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(spec, dtype=dtype, device=device, linear=linear)
        return _MODELS[key]


def share_model(
    model: WhiteBoxModel, spec: str, dtype: str = "auto", device: str | None = None
) -> None:
    """Let ``safelab/<spec>`` in this process reuse a model that is already loaded."""
    with _LOCK:
        _MODELS[(spec, dtype, device, None)] = model


def release_caches(keep: WhiteBoxModel | None = None) -> int:
    """Empty the prefix cache of every model's batcher but ``keep``'s (a process that runs one
    eval after another on many models, such as ``safelab validate``, otherwise holds each
    model's full cache at once), and free the other models' packed linear weights
    (:func:`safelab.models.kernels.drop_packed`: packed again when next used); returns how many
    caches were emptied."""
    from safelab.models.kernels import drop_packed

    with _LOCK:
        batchers = [b for k, b in _BATCHERS.items() if keep is None or k != id(keep)]
        others = [m for m in _MODELS.values() if keep is None or m is not keep]
    n = 0
    for b in batchers:
        if b.cache is not None and len(b.cache):
            b.cache.clear()
            n += 1
    for m in {id(m): m for m in others}.values():
        drop_packed(m.hf)
    return n


def shared_batcher(
    model: WhiteBoxModel,
    max_batch: int,
    cache: PrefixCacheConfig | None = None,
    threads: str | None = None,
) -> Batcher:
    """The model's one batcher (and prefix cache, sized by the largest ``cache`` asked;
    ``threads``, when given, the last asked)."""
    with _LOCK:
        if id(model) not in _BATCHERS:
            _BATCHERS[id(model)] = Batcher(model, max_batch, cache=cache)
        elif cache is not None:
            _BATCHERS[id(model)].use_cache(cache)
        _BATCHERS[id(model)].threads.set(threads)
        return _BATCHERS[id(model)]
