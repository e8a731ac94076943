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


@pytest.fixture(scope="session")
def _empty_config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-home")


@pytest.fixture(autouse=True)
def _hermetic_user_presets(_empty_config_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default user presets folder (``$XDG_CONFIG_HOME/bnmusic/presets``) is an
    empty one of the test session's, so a developer's own presets never change a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(_empty_config_home))


@pytest.fixture(scope="session")
def ray_address():
    """A real local Ray instance (2 CPUs, no dashboard, a short temp folder) for the whole
    session; its GCS address. Skips when Ray is not installed (CI installs it:
    scripts/test). Workers find tests/ (test-only hooks) through PYTHONPATH."""
    import os
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    # Ray's socket paths must stay under 108 characters: a short folder in /tmp.
    temp = tempfile.mkdtemp(prefix="bnray", dir="/tmp")
    paths = os.pathsep.join([str(REPO), str(REPO / "tests")])
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        _temp_dir=temp,
        runtime_env={"env_vars": {"PYTHONPATH": paths}},
    )
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
