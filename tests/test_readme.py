"""The README's Python examples run as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "the README should show the library API"
    (tmp_path / "examples" / "noise").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "noise" / "train.wav", tmp_path / "examples" / "noise")
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "renders" / "train.music.wav").exists()
