"""How many threads a render's numeric libraries (torch, and numpy's BLAS) use.

The default never oversubscribes the machine: a render runs beside a DAW, so one core is
always left to it (and to everything else the machine runs), cores that other processes
keep busy (the 1-minute load average) are left too, and what remains is shared among
the renders that run at once. Measured on a 2-core machine (issue 18): with torch's own
default of one thread per core, the decoder ran 2.1x slower (2.7x the CPU) as soon as the
other core was busy, so on 2 cores the default is 1 thread. Each front end has
``--threads N`` to set it.

Light module: nothing heavy is imported here; torch is configured only if it is already
imported, otherwise through the environment it reads when it is.
"""

from __future__ import annotations

import math
import os
import sys

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",  # torch's intra-op pool (read at import), OpenMP BLAS
    "OPENBLAS_NUM_THREADS",  # numpy's and scipy's OpenBLAS
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",  # macOS Accelerate
    "NUMEXPR_NUM_THREADS",
)
"""Environment variables that carry the thread count to libraries loaded later and to
child processes (batch workers, the OSC worker)."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def default_threads(jobs: int = 1, *, cores: int | None = None, load: float | None = None) -> int:
    """Threads each of ``jobs`` concurrent renders should use.

    ``(cores - busy) // jobs``, at least 1, where ``busy`` is the 1-minute load average
    rounded up, but at least 1 (the core kept for the DAW).

    Args:
        jobs: renders running at once in this process or its workers.
        cores: usable cores (default: :func:`usable_cores`).
        load: the 1-minute load average (default: the machine's; 0 where unknown).
    """
    cores = usable_cores() if cores is None else max(1, int(cores))
    load = _load_average() if load is None else float(load)
    busy = max(1, math.ceil(load - 0.25))  # a process at a quarter of a core is not a core
    free = max(1, cores - busy)
    return max(1, free // max(1, int(jobs)))


def configured_threads() -> int:
    """The thread count :func:`set_threads` last set (``OMP_NUM_THREADS``), else 1: how
    many cores a render may keep busy, so also how many of its steps may run at once."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def set_threads(threads: int) -> int:
    """Make torch and the BLAS libraries use ``threads`` threads from now on; returns it.

    Sets :data:`THREAD_ENV_VARS` (for libraries imported later and child processes),
    calls ``torch.set_num_threads`` when torch is already imported (otherwise torch reads
    ``OMP_NUM_THREADS`` when it is), and limits an already loaded BLAS through
    threadpoolctl when that is installed.

    Raises:
        ValueError: ``threads`` is not a whole number >= 1.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: need a whole number >= 1")
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)
    if "numpy" in sys.modules:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass  # the environment covers a BLAS loaded later; numpy's own keeps its count
        else:
            threadpool_limits(threads)
    return threads
