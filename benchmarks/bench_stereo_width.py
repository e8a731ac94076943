"""Stereo width of real music and of the rendered music (issue 15, item 3).

Measures L/R correlation and side-to-mid level (:func:`bnmusic_bridge.stereo.width_metrics`)

1. of real stereo music: the original stereo Ogg files of the three excerpts in
   ``shared/data/music`` (those excerpts are mono downmixes), cut at the MANIFEST's
   points, and every music file of the same Debian packages whole. Give the folder the
   ``.deb`` packages were unpacked into (``apt-get download extremetuxracer-data
   xmoto-data lincity-ng-data`` and ``dpkg-deb -x``) as ``--originals``; skipped without;
2. of the music rendered for real noise recordings (mono stems): the generator's own
   stereo (the baseline, widening off, same run) and the default render (widened), with
   the coverage of the default render against ``--channels mono`` (what the width costs
   the mono sum at the loudness ceiling).

Run: ``python benchmarks/bench_stereo_width.py --originals DIR`` (about a minute); writes
``benchmarks/results/stereo_width.json``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's package, not an installed one
sys.path.insert(0, str(HERE))

from _common import machine_description, write_result  # noqa: E402

SHARED = HERE.parents[1] / "shared" / "data"
NOISES = ("blanket_train_train.wav", "esc10_rain_3-157149-A.wav", "ambie_vacuum_cleaner_a.wav")


def real_music(originals: Path) -> dict:
    import soundfile as sf

    from bnmusic_bridge.stereo import width_metrics

    cuts = {}
    manifest = SHARED / "MANIFEST.tsv"
    if manifest.is_file():
        with manifest.open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["category"] == "music":
                    cuts[Path(row["original_path"]).name] = (
                        float(row["start_s"]),
                        float(row["dur_s"]),
                    )
    tracks, excerpts = {}, {}
    for path in sorted(originals.rglob("*.ogg")):
        if "usic" not in str(path):
            continue
        x, rate = sf.read(str(path), always_2d=True, dtype="float32")
        x = x.T
        corr, side = width_metrics(x)
        tracks[path.name] = {"correlation": round(corr, 3), "side_to_mid_db": round(side, 2)}
        if path.name in cuts:
            start, dur = cuts[path.name]
            seg = x[:, int(start * rate) : int((start + dur) * rate)]
            corr, side = width_metrics(seg)
            excerpts[path.name] = {"start_s": start, "dur_s": dur, "correlation": round(corr, 3),
                                   "side_to_mid_db": round(side, 2)}  # fmt: skip
    sides = [t["side_to_mid_db"] for t in tracks.values()]
    corrs = [t["correlation"] for t in tracks.values()]

    def quartiles(v: list[float]) -> list[float]:
        return [round(q, 2) for q in statistics.quantiles(v, n=4)] if len(v) >= 2 else v

    return {
        "excerpts": excerpts,
        "tracks": tracks,
        "tracks_side_to_mid_db_quartiles": quartiles(sides),
        "tracks_correlation_quartiles": quartiles(corrs),
        "tracks_side_to_mid_db_median": round(statistics.median(sides), 2) if sides else None,
    }


def rendered(noises: list[Path]) -> dict:
    import bnmusic_bridge.pipeline as pipeline
    from bnmusic_bridge.request import RenderRequest
    from bnmusic_bridge.stereo import width_metrics

    out = {}
    shape = pipeline._shape_width
    for path in noises:
        row = {}
        pipeline._shape_width = lambda m, n, seed, **kw: (
            m if n > 1 else shape(m, n, seed)
        )  # baseline
        try:
            base = pipeline.render_file(path, RenderRequest())
        finally:
            pipeline._shape_width = shape
        wide = pipeline.render_file(path, RenderRequest())
        mono = pipeline.render_file(path, RenderRequest(channels="mono"))
        for name, r in (("generator_stereo", base), ("widened", wide)):
            corr, side = width_metrics(r.music)
            row[name] = {"correlation": round(corr, 3), "side_to_mid_db": round(side, 2),
                         "coverage": round(r.coverage, 4)}  # fmt: skip
        mid = wide.music_gained.mean(axis=0).astype(np.float64)
        m = mono.music_gained[0].astype(np.float64)
        row["mono"] = {"coverage": round(mono.coverage, 4)}
        row["gained_mono_sum_vs_mono_render_db"] = round(
            10 * np.log10(np.sum(mid**2) / np.sum(m**2)), 2
        )
        out[path.name] = row
    return out


def widen_cost(repeats: int = 5) -> dict:
    """Seconds :func:`widen` takes for one minute of 44.1 kHz stereo music, and the same
    run's baseline: a plain copy of that audio (median and spread over ``repeats``)."""
    import time

    from bnmusic_bridge.stereo import widen

    rng = np.random.default_rng(0)
    n = 60 * 44100
    t = np.arange(n) / 44100
    music = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 220 * t + 0.1)])
    music = (0.3 * music + 0.01 * rng.standard_normal((2, n))).astype(np.float32)

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    w = timed(lambda: widen(music, 44100))
    c = timed(lambda: music.copy())
    return {
        "audio_s": 60.0,
        "widen_s": {
            "median": round(statistics.median(w), 4),
            "min": round(min(w), 4),
            "max": round(max(w), 4),
        },
        "copy_baseline_s": {
            "median": round(statistics.median(c), 5),
            "min": round(min(c), 5),
            "max": round(max(c), 5),
        },
        "repeats": repeats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--originals", type=Path, help="folder the Debian music packages were unpacked into"
    )
    args = ap.parse_args()
    data: dict = {"machine": machine_description()}
    if args.originals is not None:
        data["real_music"] = real_music(args.originals)
    noises = [SHARED / "noise" / n for n in NOISES if (SHARED / "noise" / n).is_file()]
    data["rendered"] = rendered(noises)
    data["widen_cost"] = widen_cost()
    print(write_result("stereo_width", data))


if __name__ == "__main__":
    main()
