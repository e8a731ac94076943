"""Shared test fixtures: the real recordings (when present) and synthetic stems."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has none beside it."""
    if not (SHARED_DATA / "noise").is_dir():
        pytest.skip(f"real recordings not present ({SHARED_DATA})")
    return SHARED_DATA
