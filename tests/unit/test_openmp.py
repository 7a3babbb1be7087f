"""Idle OpenMP pools are released (safelab.models.openmp), by hand and by the provider."""

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import get_model
from inspect_ai.scorer import includes
from inspect_ai.solver import generate

from safelab.models import openmp
from safelab.provider import batcher


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _settle(target: int, timeout_s: float = 5.0) -> int:
    """The thread count once exiting workers have gone (they leave a moment after release)."""
    end = time.monotonic() + timeout_s
    while _threads() > target and time.monotonic() < end:
        time.sleep(0.01)
    return _threads()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_release_frees_the_calling_threads_workers_and_the_next_region_starts_new_ones() -> None:
    if not openmp.runtimes():
        pytest.skip("no OpenMP runtime with omp_pause_resource_all is loaded")
    seen: dict[str, int] = {}
    x = torch.randn(4_000_000)

    def body() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            seen["idle"] = _threads()
            (x * 2).sum()  # one parallel region: this thread now owns a pool of one worker
            seen["pool"] = _threads()
            seen["freed"] = openmp.release_workers()
            seen["released"] = _settle(seen["idle"])
            y = (x * 3).sum()  # works after the release, with a fresh worker
            seen["again"] = _threads()
            seen["value"] = int(torch.isclose(y, 3 * x.sum(), rtol=1e-4))
            openmp.release_workers()
        finally:
            torch.set_num_threads(before)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["pool"] == seen["idle"] + 1
    assert seen["freed"] >= 1
    assert seen["released"] == seen["idle"]
    assert seen["again"] == seen["idle"] + 1
    assert seen["value"] == 1


def test_the_batcher_releases_its_workers_when_idle_and_for_the_submitter(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        batcher, "release_workers", lambda: calls.append(threading.current_thread().name) or 0
    )
    task = Task(
        dataset=[Sample(input=f"Count to {i}.", target="1") for i in range(3)],
        solver=generate(),
        scorer=includes(),
    )
    (log,) = eval(
        task,
        model=get_model(f"safelab/{tiny_folder}", batch_size=3),
        display="none",
        log_dir=str(tmp_path),
        max_tokens=4,
    )
    assert log.status == "success"
    end = time.monotonic() + 5
    while "safelab-batcher" not in calls and time.monotonic() < end:
        time.sleep(0.01)
    assert "safelab-batcher" in calls  # it went idle after the samples and released
    assert sum(name != "safelab-batcher" for name in calls) >= 3  # once per submitted sample
