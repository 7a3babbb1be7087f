"""Release a thread's idle OpenMP workers, so that they do not slow the thread that computes.

torch's CPU kernels run on OpenMP. Every OS thread that has run a parallel region keeps its own
pool of worker threads for as long as it lives, and GNU OpenMP (libgomp, the runtime torch's Linux
wheels ship) counts the workers of all pools together: once they outnumber the cores, every
worker stops spin-waiting between parallel regions (``GOMP_SPINCOUNT`` is throttled to about a
hundred spins) and sleeps on a futex instead, so each of the thousands of small regions of a decode
step waits for a wake-up. Nothing has to be running for this: one idle thread that once computed
is enough.

Measured on the 2-core bench machine (``bench/generate.py``'s 16-sample eval; the second provider
thread had run one eval and was idle): 4.0-4.8 s alone, 5.9-6.6 s with it, the process using 1.3
cores instead of 1.9 at the same CPU time. After :func:`release_workers` in the idle thread the
eval ran as fast as alone.

:func:`release_workers` calls the standard OpenMP 5.0 ``omp_pause_resource_all``, which frees the
*calling* thread's pool (its workers exit; the next parallel region starts new ones, a few
microseconds). The provider's batcher calls it whenever it goes idle, and for the thread that
submits to it; a user thread that computes and then hands work to the provider can call it too.
It is a no-op where no OpenMP runtime with that function is loaded (then the runtime's own
waiting policy applies).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path

_PAUSE_SOFT = 1  # omp_pause_soft: free the thread's pool, keep the runtime's settings
_NAMES = ("libgomp", "libiomp", "libomp")

_lock = threading.Lock()
_pauses: list[tuple[str, Callable[[int], int]]] | None = None


def _loaded_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (Linux: ``/proc/self/maps``)."""
    found: list[str] = []
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        path = line.rsplit(" ", 1)[-1]
        name = Path(path).name
        if ".so" in name and name.startswith(_NAMES) and path not in found:
            found.append(path)
    return found


def _runtime_pauses() -> list[tuple[str, Callable[[int], int]]]:
    global _pauses
    if _pauses is not None:  # looked up once; every later call (one per submitted sample) is this
        return _pauses
    with _lock:
        if _pauses is None:
            import torch  # noqa: F401  (loads torch's OpenMP runtime before the lookup)

            pauses: list[tuple[str, Callable[[int], int]]] = []
            for path in _loaded_runtimes():
                try:
                    fn = ctypes.CDLL(path).omp_pause_resource_all
                except (OSError, AttributeError):
                    continue
                fn.argtypes = [ctypes.c_int]
                fn.restype = ctypes.c_int
                pauses.append((path, fn))
            _pauses = pauses
        return _pauses


def release_workers() -> int:
    """Free the calling thread's idle OpenMP workers; returns how many runtimes freed a pool.

    Call it from a thread that has finished computing with torch and will wait (or hand work to
    another thread). Inside a parallel region the runtime refuses (nothing happens).
    """
    return sum(pause(_PAUSE_SOFT) == 0 for _, pause in _runtime_pauses())


def runtimes() -> list[str]:
    """The OpenMP runtimes :func:`release_workers` acts on (for diagnostics and the bench)."""
    return [path for path, _ in _runtime_pauses()]
