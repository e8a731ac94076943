"""Render fingerprints: do renders stay byte-identical across a refactor?

Renders a fixed set of cases through the public API (``render_file`` + ``write_outputs``)
and records a SHA-256 of every output file and of the result arrays. The report's
timings (which change from run to run) are dropped before hashing it; everything else in
it is hashed as written.

Usage::

    python benchmarks/bench_render_identity.py --label before   # at the old commit
    python benchmarks/bench_render_identity.py --label after --compare before

``--compare LABEL`` reads ``results/render_identity_LABEL.json`` and lists every
fingerprint that differs (exit status 1 if any does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from _common import RESULTS, write_result  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _cases(scratch: Path) -> list[tuple[str, Path, dict[str, Any], dict[str, Any]]]:
    """(name, noise file, request fields, export fields) for every case."""
    import soundfile as sf

    # A stereo 48 kHz stem made deterministically from a shipped clip.
    mono, sr = sf.read(ROOT / "examples" / "noise" / "clock_tick.flac", dtype="float32")
    t = np.arange(mono.shape[0]) / sr
    stereo = np.stack([mono, np.roll(mono, 37) * 0.8 + 0.01 * np.sin(2 * np.pi * 90 * t)], axis=1)
    stereo_path = scratch / "clock_stereo.wav"
    sf.write(stereo_path, stereo.astype(np.float32), sr, subtype="FLOAT")

    cases: list[tuple[str, Path, dict[str, Any], dict[str, Any]]] = [
        ("default-train", ROOT / "examples/noise/train.wav", {}, {}),
        (
            "paper-smr-vacuum",
            ROOT / "examples/noise/vacuum_cleaner.wav",
            {"threshold_model": "smr", "objective": "paper", "seed": 7},
            {"lane_formats": ("json", "csv", "midi", "reaper", "summary")},
        ),
        (
            "stereo-jazz-no-ceiling",
            stereo_path,
            {"prompt": "jazz trio with upright bass", "max_loudness_lu": None, "seed": 3},
            {"bit_depth": 16, "file_type": "flac"},
        ),
        ("preset-edm-factory", ROOT / "examples/noise/train.wav", {"preset": "edm-factory-floor"}, {}),
    ]
    music_dir = SHARED / "music"
    if music_dir.is_dir():
        cases.append(
            (
                "random-music",
                ROOT / "examples/noise/vacuum_cleaner.wav",
                {"generator": "random-music", "generator_params": {"music_dir": str(music_dir)}},
                {},
            )
        )
    return cases


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


TIMING_KEYS = ("timings_s", "render_s", "seconds", "load_seconds")
"""Report keys that hold wall-clock times (they change from run to run)."""


def _without_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _report_hash(path: Path) -> str:
    # The checkout's own path (reports name the input) is not part of the render.
    text = path.read_text().replace(json.dumps(str(ROOT))[1:-1], "<repo>")
    report = _without_timings(json.loads(text))
    return _hash(json.dumps(report, sort_keys=True).encode())


def _fingerprint(result: Any, written: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("music", "music_gained", "lane_times_s", "lane_gain_db", "window_gain_db",
                 "coverage_per_frame"):
        arr = np.ascontiguousarray(getattr(result, name))
        out[f"array:{name}"] = _hash(arr.tobytes())
    out["scalar:coverage"] = repr(result.coverage)
    out["scalar:nmr_db"] = repr(result.nmr_db)
    out["scalar:music_lufs"] = repr(result.music_lufs)
    for kind, path_text in sorted(written.items()):
        path = Path(path_text)
        if path.suffix == ".json" and path.name.endswith(".report.json"):
            out[f"file:{kind}"] = _report_hash(path)
        elif path.suffix == ".png":
            continue  # matplotlib's PNG depends on the font cache and version, not on us
        else:
            out[f"file:{kind}"] = _hash(path.read_bytes())
    return out


def _riffusion_case(scratch: Path) -> dict[str, str] | None:
    try:
        from tiny_sd import save_tiny_sd_pipeline, torch_single_thread
    except ImportError:
        return None
    from bnmusic_bridge import ExportOptions, RenderRequest, render_file, write_outputs

    model = save_tiny_sd_pipeline(scratch / "tiny_sd")
    request = RenderRequest(
        generator="riffusion",
        model=str(model),
        local_files_only=True,
        seed=5,
        generator_params={"resolution": 64, "outpaint_steps": 2, "inpaint_steps": 2},
    )
    with torch_single_thread():
        result = render_file(ROOT / "examples/noise/clock_tick.flac", request)
    written = write_outputs(result, scratch / "riff", stem_name="clock", options=ExportOptions(plot=False))
    return _fingerprint(result, written.as_dict())


def run() -> dict[str, dict[str, str]]:
    from bnmusic_bridge import ExportOptions, RenderRequest, render_file, write_outputs

    fingerprints: dict[str, dict[str, str]] = {}
    # A fixed scratch folder: reports and Reaper files hold absolute output paths.
    scratch = Path(tempfile.gettempdir()) / "bnmusic-render-identity"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        for name, noise, fields, export in _cases(scratch):
            fields = dict(fields)
            preset = fields.pop("preset", None)
            if preset is not None:
                from bnmusic_bridge.presets import load_preset

                loaded = load_preset(preset)
                request, options = loaded.request, loaded.export
            else:
                request, options = RenderRequest(**fields), ExportOptions(**export)
            result = render_file(noise, request)
            written = write_outputs(result, scratch / name, stem_name=noise.stem, options=options)
            fingerprints[name] = _fingerprint(result, written.as_dict())
            print(f"{name}: {len(fingerprints[name])} fingerprints", flush=True)
        riff = _riffusion_case(scratch)
        if riff is not None:
            fingerprints["riffusion-tiny"] = riff
            print(f"riffusion-tiny: {len(riff)} fingerprints", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return fingerprints


def compare(now: dict[str, dict[str, str]], before: dict[str, dict[str, str]]) -> list[str]:
    diffs = []
    for case in sorted(set(now) | set(before)):
        a, b = before.get(case, {}), now.get(case, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{case} {key}: {a.get(key)} -> {b.get(key)}")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="name of this run (results/render_identity_LABEL.json)")
    parser.add_argument("--compare", help="label of an earlier run to compare against")
    args = parser.parse_args()
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    fingerprints = run()
    data: dict[str, Any] = {"label": args.label, "commit": commit, "fingerprints": fingerprints}
    if args.compare:
        before = json.loads((RESULTS / f"render_identity_{args.compare}.json").read_text())
        diffs = compare(fingerprints, before["fingerprints"])
        data["compared_with"] = {"label": args.compare, "commit": before.get("commit")}
        data["differences"] = diffs
        cases = len(fingerprints)
        total = sum(len(v) for v in fingerprints.values())
        print(f"{cases} cases, {total} fingerprints, {len(diffs)} differ from {args.compare!r}")
        for d in diffs:
            print("  " + d)
    path = write_result(f"render_identity_{args.label}", data)
    print(f"wrote {path}")
    return 1 if data.get("differences") else 0


if __name__ == "__main__":
    raise SystemExit(main())
