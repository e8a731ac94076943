"""Keep freed memory in the process for the next block instead of handing it back.

A render walks a stem in blocks, and each block allocates the same large temporaries
(complex spectra, band powers, gains: 4 to 150 MB each). glibc serves every allocation
above its mmap threshold (128 kB, raised on its own to at most 32 MB) with a fresh
``mmap`` and returns it with ``munmap`` when freed, so each block pays again for page
faults and for the kernel zeroing every page: on a 10-minute render 11 s of system
CPU (a sixth of the render's CPU; measured on a 2-core machine, issue 18). With
:func:`keep_freed_memory` those allocations come from the heap, and freed blocks stay
there for the next one. The peak memory is the same (it measured 4 % higher: the heap
fragments a little); what changes is that the process keeps its peak until it exits.
For one render that is the CLI's case; a long-lived server should not call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30
"""Free memory at the top of the heap that glibc keeps rather than returns, bytes."""


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to serve large blocks from the heap and keep freed memory
    (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``); the environment's
    ``MALLOC_MMAP_MAX_`` / ``MALLOC_TRIM_THRESHOLD_`` do the same from the start.

    Returns:
        True where it took effect (glibc), False elsewhere (no change is made).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if kept:
        _no_numpy_hugepages()
    return kept


def _no_numpy_hugepages() -> None:
    """Stop numpy from asking for transparent huge pages (``madvise(MADV_HUGEPAGE)`` on
    every array of 4 MB or more). On reused heap memory each request costs the kernel a
    collapse of the range into huge pages again: on a 10-minute render 5 s of system
    CPU (measured with ``NUMPY_MADVISE_HUGEPAGE=0``, which does the same from the start)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:  # another numpy: its default stays
        return
    _set_madvise_hugepage(False)
