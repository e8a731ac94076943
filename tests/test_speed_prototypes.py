"""keep_freed_memory changes the allocator only, never a number."""

from __future__ import annotations

import numpy as np

from bnmusic_bridge.heap import keep_freed_memory


def test_keep_freed_memory_answers_and_allocations_still_work() -> None:
    assert keep_freed_memory() in (True, False)
    big = np.ones(40_000_000 // 8)  # above glibc's largest mmap threshold
    assert float(big.sum()) == big.size


def test_align_with_two_threads_equals_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from bnmusic_bridge import align

    rng = np.random.default_rng(3)
    n = 44_100 * 3
    noise = rng.standard_normal(n).astype(np.float32)
    music = (0.3 * rng.standard_normal((2, n))).astype(np.float32)
    settings = align.AlignSettings(0.5, 9.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, _ = align.align_music(music, noise, settings)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    two, _ = align.align_music(music, noise, settings)
    np.testing.assert_array_equal(one, two)
