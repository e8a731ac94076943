"""Does the music absorb the noise better than an unrelated song? (issue 12's targets)

Run: ``python benchmarks/bench_absorb.py`` (writes benchmarks/results/absorb.json; a few
minutes on one core). Needs the shared recordings (../shared/data) and, for the music
descriptors, Essentia and librosa (``pip install -e .[bench]``); without them the
descriptor rows are left out and say so.

For each of the ten real noise recordings (44.1 kHz mono) and each source of music:

* ``default``: the default render (embedded generator + the alignment step);
* ``generator_unaligned``: the same with ``align_strength = 0``;
* ``unrelated``: each of the three real music excerpts, looped or cut to the noise's
  length (no alignment): the baseline the method must beat, and the producer's track
  "raw";
* ``track_fitted`` / ``track_aligned``: each excerpt as the producer's own track through
  the ``track`` source (``--music FILE``: tempo, beat phase, bar loops), without and with
  the alignment step;
* ``noise_shaped``: the noise itself as "music": the limit (+21 LU under the smr model
  whatever the coverage).

Every music is loudness-matched to the noise (integrated LUFS, as the pipeline's unity
stem). Measured per pair, for the ``smr`` (paper, 21 dB) and ``spreading`` threshold
models: the music loudness over the noise (LU) needed to mask 50 % and 90 % of the
noise's high-energy mask bins (the pipeline's own mask, loudest 15 %); the Pearson
correlation of the two log-mel spectrograms (dB, floored 80 dB under each maximum); and,
with independent tools, whether the music still measures as music: Essentia's
KeyExtractor key strength, a librosa beat-pulse ratio (onset strength on the tracked
beats over its mean) and librosa's median spectral flatness, all at librosa's default
22,050 Hz, compared with the range the real excerpts give (5 s and 10 s segments).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _common import write_result  # noqa: E402

from bnmusic_bridge import RenderRequest, render  # noqa: E402
from bnmusic_bridge.alignment import floored_db, pearson  # noqa: E402
from bnmusic_bridge.amplify import solve_gain_for_coverage  # noqa: E402
from bnmusic_bridge.grid import SAMPLE_RATE_HZ  # noqa: E402
from bnmusic_bridge.loudness import integrated_lufs  # noqa: E402
from bnmusic_bridge.masking import masking_field  # noqa: E402
from bnmusic_bridge.request import THRESHOLD_MODELS, field_default  # noqa: E402
from bnmusic_bridge.spectrogram import audio_to_mel  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
COVERAGES = (0.5, 0.9)
TARGET_GAP_LU = 8.0
"""The default render must need at least this much less than unrelated music."""
TARGET_TRACK_GAP_LU = 6.0
"""The producer's track aligned must need at least this much less than raw."""
TARGET_CORRELATION = 0.5
SHAPED_LIMIT_LU = 21.0
"""Music shaped exactly like the noise needs +21 LU under the smr model."""
TARGET_SHAPED_GAP_LU = 7.0


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE_HZ:
        raise SystemExit(f"{path}: expected {SAMPLE_RATE_HZ} Hz, got {rate}")
    return audio.mean(axis=1)


def _fit(music: np.ndarray, n: int) -> np.ndarray:
    return np.tile(music, int(math.ceil(n / music.size)))[:n]


def _matched(music: np.ndarray, noise: np.ndarray) -> np.ndarray:
    gain = 10.0 ** ((integrated_lufs(noise[None], SAMPLE_RATE_HZ) - integrated_lufs(music[None], SAMPLE_RATE_HZ)) / 20.0)
    return (music * gain).astype(np.float32)


def measure_pair(noise: np.ndarray, music: np.ndarray, noise_mel: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """LU over the noise needed for each coverage and model, and the log-mel correlation."""
    music = _matched(music, noise)
    music_mel = audio_to_mel(music)
    over_lu = integrated_lufs(music[None], SAMPLE_RATE_HZ) - integrated_lufs(noise[None], SAMPLE_RATE_HZ)
    row: dict[str, float] = {
        "logmel_correlation": pearson(floored_db(noise_mel**2), floored_db(music_mel**2))
    }
    for model in THRESHOLD_MODELS:
        field = masking_field(model, noise_mel, music_mel, smr_db=field_default("smr_db"))
        for coverage in COVERAGES:
            gain = solve_gain_for_coverage(field, mask, coverage)
            lu = over_lu + 20.0 * math.log10(gain) if 0.0 < gain < math.inf else math.inf
            row[f"{model}_{round(coverage * 100)}_lu"] = lu
    return row


def describe_music(y: np.ndarray) -> dict[str, Any] | None:
    """Key strength (Essentia), beat pulse and spectral flatness (librosa) at 22,050 Hz."""
    try:
        import essentia.standard as es
        import librosa
    except ImportError:
        return None
    y22 = librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=SAMPLE_RATE_HZ, target_sr=22_050)
    y22 = (y22 / (np.max(np.abs(y22)) + 1e-12) * 0.5).astype(np.float32)
    key, scale, strength = es.KeyExtractor(sampleRate=22_050)(y22)
    onset = librosa.onset.onset_strength(y=y22, sr=22_050)
    _, beats = librosa.beat.beat_track(onset_envelope=onset, sr=22_050)
    pulse = float(onset[beats].mean() / (onset.mean() + 1e-12)) if len(beats) else 0.0
    flatness = float(np.median(librosa.feature.spectral_flatness(y=y22)[0]))
    return {"key": f"{key} {scale}", "key_strength": float(strength), "beat_pulse": pulse, "flatness": flatness}


def _median(rows: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


ROWS = ("default", "generator_unaligned", "unrelated", "track_fitted", "track_aligned", "noise_shaped")
METRICS = tuple(f"{m}_{round(c * 100)}_lu" for m in THRESHOLD_MODELS for c in COVERAGES)


def run(quick: bool, noise_dir: Path = DATA / "noise") -> dict[str, Any]:
    noises = sorted(noise_dir.glob("*.wav"))
    music_files = sorted((DATA / "music").glob("*.wav"))
    musics = {p.stem: _read(p) for p in music_files}
    if not noises or not musics:
        raise SystemExit(f"no noise recordings under {noise_dir} or music under {DATA / 'music'}")
    if quick:
        noises = noises[:3]
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ROWS}
    descriptors: dict[str, list[dict[str, Any]]] = {"default": [], "generator_unaligned": [], "real_music": []}
    t0 = time.perf_counter()
    for path in noises:
        noise = _read(path)
        default = render(noise[None], SAMPLE_RATE_HZ, RenderRequest())
        plain = render(noise[None], SAMPLE_RATE_HZ, RenderRequest(align_strength=0.0))
        noise_mel, mask = default.analysis.noise_mel, default.analysis.mask
        for name, result in (("default", default), ("generator_unaligned", plain)):
            # The mono sum: what masks the noise wherever the listener sits (the music is
            # stereo by default; its widening leaves the sum untouched).
            mono = result.music.mean(axis=0)
            row = {"noise": path.stem, **measure_pair(noise, mono, noise_mel, mask)}
            rows[name].append(row)
            d = describe_music(mono)
            if d is not None:
                descriptors[name].append({"noise": path.stem, **d})
        rows["noise_shaped"].append({"noise": path.stem, **measure_pair(noise, noise, noise_mel, mask)})
        for music_path in music_files:
            music_name = music_path.stem
            raw = _fit(musics[music_name], noise.size)
            rows["unrelated"].append({"noise": path.stem, "music": music_name, **measure_pair(noise, raw, noise_mel, mask)})
            for name, strength in (("track_fitted", 0.0), ("track_aligned", field_default("align_strength"))):
                track = render(noise[None], SAMPLE_RATE_HZ, RenderRequest(
                    generator="track", music=str(music_path), align_strength=strength))
                rows[name].append(
                    {"noise": path.stem, "music": music_name, **measure_pair(noise, track.music.mean(axis=0), noise_mel, mask)}
                )
        print(f"{path.stem}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    for music_name, music in musics.items():
        n = SAMPLE_RATE_HZ * 5
        for seg_name, seg in (("10s", music), ("first5s", music[:n]), ("last5s", music[-n:])):
            d = describe_music(seg)
            if d is not None:
                descriptors["real_music"].append({"music": music_name, "segment": seg_name, **d})
    return {"rows": rows, "descriptors": descriptors, "seconds": time.perf_counter() - t0}


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    rows = data["rows"]
    medians = {name: {k: _median(r, k) for k in (*METRICS, "logmel_correlation")} for name, r in rows.items()}
    gaps = {k: medians["unrelated"][k] - medians["default"][k] for k in METRICS}
    track_gaps = {k: medians["unrelated"][k] - medians["track_aligned"][k] for k in METRICS}
    summary: dict[str, Any] = {
        "medians": medians,
        "default_vs_unrelated_lu": gaps,
        "track_aligned_vs_raw_lu": track_gaps,
        "targets": {
            "default_at_least_8_lu_under_unrelated": {k: v >= TARGET_GAP_LU for k, v in gaps.items()},
            "track_aligned_at_least_6_lu_under_raw": {k: v >= TARGET_TRACK_GAP_LU for k, v in track_gaps.items()},
            "logmel_correlation_at_least_0_5": medians["default"]["logmel_correlation"] >= TARGET_CORRELATION,
            "smr_50_within_7_lu_of_21": medians["default"]["smr_50_lu"] - SHAPED_LIMIT_LU <= TARGET_SHAPED_GAP_LU,
        },
    }
    desc = data["descriptors"]
    if desc["real_music"]:
        ranges = {
            k: (min(d[k] for d in desc["real_music"]), max(d[k] for d in desc["real_music"]))
            for k in ("key_strength", "beat_pulse", "flatness")
        }
        summary["real_music_descriptor_ranges"] = ranges
        for name in ("default", "generator_unaligned"):
            if not desc[name]:
                continue
            summary[f"{name}_descriptors"] = {
                "median": {k: float(statistics.median(d[k] for d in desc[name])) for k in ranges},
                "inside_real_range": {
                    "key_strength": sum(d["key_strength"] >= ranges["key_strength"][0] for d in desc[name]),
                    "beat_pulse": sum(d["beat_pulse"] >= ranges["beat_pulse"][0] for d in desc[name]),
                    "flatness": sum(d["flatness"] <= ranges["flatness"][1] for d in desc[name]),
                    "of": len(desc[name]),
                },
            }
    else:
        summary["descriptors"] = "not measured: Essentia or librosa missing (pip install -e .[bench])"
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three noises only (a smoke run)")
    parser.add_argument("--name", default="absorb", help="result file name (results/NAME.json)")
    parser.add_argument(
        "--noise-dir", type=Path, default=DATA / "noise",
        help="folder of 44.1 kHz WAV noises (default: the shared recordings); held-out "
        "recordings check that nothing was tuned to the shared ten",
    )  # fmt: skip
    args = parser.parse_args()
    data = run(args.quick, args.noise_dir)
    summary = summarise(data)
    med = summary["medians"]
    for name in ROWS:
        cells = "  ".join(f"{k.replace('_lu', '')} {med[name][k]:+6.1f}" for k in METRICS)
        print(f"{name:20s} {cells}  corr {med[name]['logmel_correlation']:.2f}")
    print("targets:", summary["targets"])
    path = write_result(args.name, {"command": " ".join(sys.argv), "summary": summary, **data})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
