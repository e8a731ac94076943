"""Stage 2 lanes as a mix engineer judges them: how the lane moves, and who decides the
blend on a loud bounce. Before (the code at ``BASELINE_COMMIT``) and after, same run.

Run: ``python benchmarks/bench_lane_motion.py`` (writes
benchmarks/results/lane_motion.json; about 10 minutes on a loaded 2-core machine).

Stems (44.1 kHz mono, built from the ten recordings in ../shared/data/noise, each
recording once in file order and once in another order, joined with 50 ms equal-power
crossfades: 133 s):

* ``recorded_-15lufs``: the recordings at their recorded levels (-38 to -10 LUFS),
  the whole scaled to -15 LUFS integrated (sample peak +0.7 dBFS, kept as float): a
  loud bounce, the case of the issue (a 134 s stem with pop-cafe);
* ``levelled_-30lufs``: each recording first brought to the same loudness, the whole
  at -30 LUFS (peak -6.3 dBFS): a bounce with headroom.

Requests: the default :class:`RenderRequest` and the ``pop-cafe`` preset, each

* ``before``: rendered by the baseline commit's package (exported with ``git archive``
  and run in a subprocess), where the -1 dBFS peak limit always sits in the lane and the
  lane follows the per-frame caps;
* ``lane``: this tree with ``peak_mode="lane"`` (the peak limit in the lane, held like
  a look-ahead limiter);
* ``bus-trim``: this tree with the default ``peak_mode="bus-trim"``.

Measured on each render's lane (10 ms frames) with
:func:`bnmusic_bridge.metering.lane_motion`: share of frame steps at the slew limit,
turns (a rise becoming a fall or back) per second and the shortest gap between two,
median range within 1 s, spikes (runs of at most 50 ms standing over 0.05 dB off the 90
ms running median), and how many spikes lie within 3 frames of a lane-window join or 10
frames of a generation-window join (against what chance would put there); lane points
after compaction at 0.1 dB (:func:`bnmusic_bridge.export.lanes.compact_lane`); the gain
the blend asked for (each window's objective gain, the shortfalls' needed gain; per
window, that gain under ``max_gain_db`` and the loudness ceiling's cap, against the
lane's mean there) and what the lane delivered; the music's loudness over the noise and
its coverage; the bus
trim (:func:`bnmusic_bridge.blend.bus_trim`: noise + blended music to -1 dBTP),
computed for every render, the baseline's included.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "noise"
SR = 44_100
BASELINE_COMMIT = "7f615f6"
"""The last commit before the held lane and the peak modes."""
SECOND_ORDER = (3, 7, 0, 9, 5, 1, 8, 4, 2, 6)
FADE_SAMPLES = 2205  # 50 ms
PRESETS = ("default", "pop-cafe")
MODES = ("before", "lane", "bus-trim")


# ----------------------------------------------------------------------------- worker


def worker(package_root: str, stem: str, preset: str, mode: str, out: str) -> None:
    """Render ``stem`` (a .npy of mono float32 at 44.1 kHz) with whatever
    ``bnmusic_bridge`` is under ``package_root`` and save what the parent measures."""
    sys.path.insert(0, package_root)
    from bnmusic_bridge import RenderRequest, render
    from bnmusic_bridge.presets import load_preset

    noise = np.load(stem)
    req = RenderRequest() if preset == "default" else load_preset(preset).request
    if mode != "before":
        req = req.replace(peak_mode=mode)
    t0 = time.perf_counter()
    res = render(noise[None, :], SR, req)
    seconds = time.perf_counter() - t0
    blend = res.details.blend
    shortfalls = [s.to_dict() for s in res.details.shortfalls]
    np.savez(
        out,
        lane_gain_db=res.lane_gain_db,
        window_gain_db=res.window_gain_db,
        music_gained=res.music_gained,
        music=res.music,
        meta=json.dumps(
            {
                "package": str(Path(sys.modules["bnmusic_bridge"].__file__).parent),
                "render_s": seconds,
                "amplify_s": res.timings_s.get("amplify"),
                "coverage": res.coverage,
                "music_minus_noise_lu": blend.rendered.music_minus_noise_lu,
                "music_peak_dbfs": blend.rendered.peak_dbfs,
                "max_slew_db_per_s": req.max_slew_db_per_s,
                "max_gain_db": req.max_gain_db,
                "max_loudness_lu": req.max_loudness_lu,
                "lane_window_s": req.lane_window_s,
                "lane_hop_s": req.lane_hop_s,
                "overlap_frames": req.overlap_frames,
                "shortfalls": shortfalls,
                "trim_db": blend.trim_db,
                "noise_lufs": blend.noise_lufs_output_layout,
            }
        ),
    )


# ----------------------------------------------------------------------------- stems


def _join(clips: list[np.ndarray]) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, FADE_SAMPLES, dtype=np.float64)
    out = clips[0].astype(np.float64)
    for clip in clips[1:]:
        c = clip.astype(np.float64)
        out[-FADE_SAMPLES:] = out[-FADE_SAMPLES:] * np.sqrt(1 - ramp) + c[:FADE_SAMPLES] * np.sqrt(ramp)
        out = np.concatenate([out, c[FADE_SAMPLES:]])
    return out


def build_stems(folder: Path) -> dict[str, dict[str, Any]]:
    import soundfile as sf

    from bnmusic_bridge.loudness import integrated_lufs

    paths = sorted(DATA.glob("*.wav"))
    if len(paths) != 10:
        raise SystemExit(f"expected the ten recordings in {DATA}, found {len(paths)}")
    clips = [sf.read(p, dtype="float32")[0] for p in paths]

    def level(x: np.ndarray, target: float) -> np.ndarray:
        return x * 10 ** ((target - integrated_lufs(x[None, :], SR)) / 20)

    stems = {}
    for name, parts, target in (
        ("recorded_-15lufs", clips, -15.0),
        ("levelled_-30lufs", [level(c, -23.0) for c in clips], -30.0),
    ):
        x = level(_join(list(parts) + [parts[i] for i in SECOND_ORDER]), target).astype(np.float32)
        path = folder / f"{name}.npy"
        np.save(path, x)
        stems[name] = {
            "path": path,
            "duration_s": round(x.size / SR, 2),
            "lufs": round(integrated_lufs(x[None, :], SR), 2),
            "peak_dbfs": round(20 * math.log10(float(np.abs(x).max())), 2),
        }
    stems["_order"] = {"first pass": [p.name for p in paths], "second pass": [paths[i].name for i in SECOND_ORDER]}
    return stems


# ----------------------------------------------------------------------------- measures


def _spikes_near_joins(lane: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """Where the spikes are: near lane-window joins (within 3 frames) and generation-window
    joins (within 10 frames of a crossfade's centre), against chance."""
    from scipy.ndimage import median_filter

    from bnmusic_bridge.metering import MOTION_SPIKE_DB, MOTION_SPIKE_FRAMES
    from bnmusic_bridge.windows import plan_windows

    off = np.abs(lane - median_filter(lane, 9, mode="nearest")) > MOTION_SPIKE_DB
    edges = np.diff(np.concatenate([[0], off.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    keep = stops - starts <= MOTION_SPIKE_FRAMES
    pos = starts[keep]
    hop = round(meta["lane_hop_s"] * 100)
    gen = np.array(plan_windows((lane.size - 1) * 441, meta["overlap_frames"]).start_frames[1:])
    gen = gen + meta["overlap_frames"] // 2
    out: dict[str, Any] = {"spikes": int(pos.size)}
    if pos.size:
        d_lane = np.minimum(pos % hop, hop - pos % hop)
        d_gen = np.min(np.abs(pos[:, None] - gen[None, :]), axis=1) if gen.size else np.full(pos.size, 10**9)
        out["within_3_frames_of_a_lane_window_join"] = int(np.sum(d_lane <= 3))
        out["expected_by_chance_lane"] = round(pos.size * 7 / hop, 1)
        out["within_10_frames_of_a_generation_join"] = int(np.sum(d_gen <= 10))
        stride = (gen[1] - gen[0]) if gen.size > 1 else lane.size
        out["expected_by_chance_generation"] = round(pos.size * 21 / stride, 1)
        out["median_height_db"] = round(
            float(np.median([np.abs(lane[a:b] - median_filter(lane, 9, mode="nearest")[a:b]).max() for a, b in zip(starts[keep], stops[keep], strict=True)])), 3
        )
        out["median_frames"] = float(np.median(stops[keep] - starts[keep]))
    return out


def _per_window(z: Any, meta: dict[str, Any], lane: np.ndarray) -> dict[str, Any]:
    """Per lane window: what the blend asked within its own limits (the objective's gain
    under ``max_gain_db`` and the loudness ceiling's cap, both measured as the pipeline
    does) against the lane's mean over the window; medians over the windows, dB."""
    from bnmusic_bridge.amplify import frames_in, window_bounds
    from bnmusic_bridge.blend import loudness_caps_db

    bounds = window_bounds(lane.size, frames_in(meta["lane_window_s"]), frames_in(meta["lane_hop_s"]))
    caps = loudness_caps_db(z["music"], meta["noise_lufs"], meta["max_loudness_lu"], bounds, lane.size)
    win = np.minimum(np.asarray(z["window_gain_db"], dtype=np.float64), meta["max_gain_db"])
    asked = np.array([min(win[i], float(caps[a:b].min())) for i, (a, b) in enumerate(bounds)])
    got = np.array([float(lane[a:b].mean()) for a, b in bounds])
    ok = np.isfinite(asked)
    gap = asked[ok] - got[ok]
    return {
        "asked_within_limits_db_median": round(float(np.median(asked[ok])), 2),
        "delivered_db_median": round(float(np.median(got)), 2),
        "asked_minus_delivered_db_median": round(float(np.median(gap)), 2),
        "asked_minus_delivered_db_max": round(float(gap.max()), 2),
        "windows_delivered_1db_short_or_more": int(np.sum(gap >= 1.0)),
        "windows": len(bounds),
    }


def measure(npz: Path, noise: np.ndarray) -> dict[str, Any]:
    from bnmusic_bridge.blend import PEAK_CEILING_DBFS, BlendSettings, bus_trim
    from bnmusic_bridge.export.lanes import compact_lane
    from bnmusic_bridge.metering import lane_motion
    from bnmusic_bridge.request import RenderRequest

    z = np.load(npz)
    meta = json.loads(str(z["meta"]))
    lane = z["lane_gain_db"].astype(np.float64)
    motion = lane_motion(lane, 0.01, meta["max_slew_db_per_s"]).to_dict()
    kt, _ = compact_lane(np.arange(lane.size) / 100.0, lane, 0.1)
    win = z["window_gain_db"]
    finite = win[np.isfinite(win)]
    needed = [s["needed_gain_db"] for s in meta["shortfalls"] if s["needed_gain_db"] is not None]
    causes: dict[str, int] = {}
    for s in meta["shortfalls"]:
        causes[s["limited_by"]] = causes.get(s["limited_by"], 0) + 1
    worst = min(meta["shortfalls"], key=lambda s: s["capped_gain_db"], default=None)
    settings = BlendSettings.from_request(RenderRequest(), peak_ceiling_dbfs=PEAK_CEILING_DBFS)
    trim = bus_trim(z["music_gained"], noise[None, :], SR, settings)
    return {
        "motion": motion,
        "spike_positions": _spikes_near_joins(lane, meta),
        "points_compacted_0.1db": int(kt.size),
        "points_full": int(lane.size),
        "asked": {
            "window_gain_db_median": round(float(np.median(finite)), 2) if finite.size else None,
            "window_gain_db_max": round(float(finite.max()), 2) if finite.size else None,
            "windows_out_of_reach": int(np.sum(np.isinf(win) & (win > 0))),
            "shortfall_needed_db_max": round(max(needed), 2) if needed else None,
            "max_gain_db": meta["max_gain_db"],
            "max_loudness_lu": meta["max_loudness_lu"],
        },
        "delivered": {
            "lane_db_median": round(float(np.median(lane)), 2),
            "lane_db_min": round(float(lane.min()), 2),
            "lane_db_max": round(float(lane.max()), 2),
            "music_minus_noise_lu": round(meta["music_minus_noise_lu"], 2),
            "music_peak_dbfs": round(meta["music_peak_dbfs"], 2),
            "coverage": round(meta["coverage"], 4),
            "lowest_cap_in_a_short_window_db": None if worst is None else worst["capped_gain_db"],
        },
        "per_window": _per_window(z, meta, lane),
        "shortfalls_by_cause": causes,
        "end_trim_db": round(meta["trim_db"], 3),
        "bus_trim": trim.to_dict(),
        "render_s": round(meta["render_s"], 1),
        "amplify_s": None if meta["amplify_s"] is None else round(meta["amplify_s"], 2),
        "package": meta["package"],
    }


# ----------------------------------------------------------------------------- main


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", nargs=5, metavar=("ROOT", "STEM", "PRESET", "MODE", "OUT"))
    ap.add_argument("--baseline", default=BASELINE_COMMIT, help="commit measured as 'before'")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--modes", default=",".join(MODES))
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import machine_description, write_result

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.baseline, "bnmusic_bridge"], cwd=REPO, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        stems = build_stems(tmp)
        order = stems.pop("_order")
        for stem_name, stem in stems.items():
            noise = np.load(stem["path"])
            for preset in args.presets.split(","):
                for mode in args.modes.split(","):
                    out = tmp / f"{stem_name}_{preset}_{mode}.npz"
                    root = str(base) if mode == "before" else str(REPO)
                    t0 = time.perf_counter()
                    subprocess.run(
                        [sys.executable, __file__, "--worker", root, str(stem["path"]), preset, mode, str(out)],
                        check=True,
                    )
                    row = measure(out, noise)
                    results.setdefault(stem_name, {}).setdefault(preset, {})[mode] = row
                    m = row["motion"]
                    print(
                        f"{stem_name:18s} {preset:9s} {mode:9s} slew {m['slew_share']:.3f} turns/s "
                        f"{m['turns_per_s']:.2f} gap {m['min_turn_gap_s']} swing {m['median_swing_1s_db']:.2f} "
                        f"spikes {m['spikes']} pts {row['points_compacted_0.1db']} LU "
                        f"{row['delivered']['music_minus_noise_lu']:+.2f} cov {row['delivered']['coverage']:.3f} "
                        f"bus {row['bus_trim']['trim_db']} short {row['per_window']['asked_minus_delivered_db_median']} "
                        f"({time.perf_counter() - t0:.0f} s)",
                        flush=True,
                    )
        for stem in stems.values():
            stem["path"] = stem["path"].name
    path = write_result(
        "lane_motion",
        {
            "machine_extra": {
                **{k: v for k, v in machine_description().items() if k in ("load_average_1min",)},
                "git_commit": _git("rev-parse", "HEAD"),
                "git_dirty": _git("status", "--porcelain", "--", "bnmusic_bridge").splitlines(),
                "baseline_commit": _git("rev-parse", args.baseline),
            },
            "what": __doc__.split("\n\n")[0],
            "stems": {**stems, "order": order},
            "frame_period_s": 0.01,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
