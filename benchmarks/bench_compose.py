"""Composing for masking: the embedded generator alone and through an alignment step,
against unrelated real music, on the ten real noise recordings in ../shared/data.

Run: ``python benchmarks/bench_compose.py`` (writes benchmarks/results/compose.json).
``--tree PATH --label NAME`` measures the package in another checkout (for example the
commit before a change) and files it under NAME in the same result file, next to the
labels already there.

For every noise recording: the default render (``RenderRequest()``, the ``procedural``
generator; the unity music stem, loudness-matched to the noise), then that music
through the alignment step's prototype (:func:`_align_prototype`: a bounded,
time-varying sixth-octave envelope transfer towards the noise, strength 1, at most
12 dB up or down). For each, and for each of the three real music excerpts (tiled or cut
to the noise's length, not aligned):

- LU needed: the music's loudness over the noise's (BS.1770, LU) at the lowest gain that
  masks 50 % and 90 % of the noise's high-energy mask bins (mask area 0.15), under the
  paper's ``smr`` model (music 21 dB over the noise in a bin) and the ``spreading``
  model. Music shaped exactly like the noise needs +21 LU under ``smr``.
- log-mel correlation: Pearson correlation of the noise's and the music's mel power in
  dB (floored 80 dB under each one's maximum), over all bins.
- music-ness, from libraries independent of this package (skipped when missing): key
  strength (Essentia KeyExtractor), beat pulse (librosa: mean onset strength on the
  tracked beats over its mean) and the median spectral flatness (librosa), all on the
  music at 22,050 Hz, peak-normalised.

Medians over the ten clips are compared with the targets of issue 12.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SR = 44_100
KEYS = ("smr_50", "smr_90", "spreading_50", "spreading_90")
TARGET_LU_BELOW_REAL = 8.0
TARGET_CORRELATION = 0.5
TARGET_SMR_50_LU = 28.0  # within 7 LU of the +21 LU of music shaped like the noise


def _align_prototype(
    music: np.ndarray,
    noise: np.ndarray,
    strength: float = 1.0,
    max_boost_db: float = 12.0,
    max_cut_db: float = 12.0,
    time_smooth_s: float = 0.1,
    per_octave: int = 6,
    n_fft: int = 4_096,
    hop: int = 512,
    gate_db: float = -50.0,
) -> np.ndarray:
    """The alignment step's prototype (issue 12, item 1), as the lead shared it: band
    gains (triangular sixth-octave bands, 30 Hz..18 kHz, 0.1 s smoothing) that move the
    music's band power towards the noise's, less their noise-power-weighted mean, at
    most ``max_boost_db`` up and ``max_cut_db`` down; bands more than 50 dB under the
    music's loudest are never raised."""
    from scipy.signal import istft, stft

    f, _, spec_m = stft(music, SR, nperseg=n_fft, noverlap=n_fft - hop, boundary="even")
    _, _, spec_n = stft(noise, SR, nperseg=n_fft, noverlap=n_fft - hop, boundary="even")
    frames = min(spec_m.shape[1], spec_n.shape[1])
    count = int(np.floor(np.log2(18_000.0 / 30.0) * per_octave)) + 1
    centres = 30.0 * 2.0 ** (np.arange(count) / per_octave)
    distance = np.abs(np.log2(np.maximum(f, 1e-3))[None, :] - np.log2(centres)[:, None])
    bands = np.maximum(0.0, 1.0 - distance * per_octave)
    bands[:, f < 15.0] = 0.0
    smooth = max(1, int(round(time_smooth_s * SR / hop)))

    def smoothed(x: np.ndarray) -> np.ndarray:
        kernel = np.hanning(smooth + 2)[1:-1]
        kernel /= kernel.sum()
        padded = np.pad(x, ((0, 0), (smooth, smooth)), mode="edge")
        out = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, padded)
        return out[:, smooth:-smooth]

    m_pow = smoothed(bands @ np.abs(spec_m[:, :frames]) ** 2) + 1e-20
    n_pow = smoothed(bands @ np.abs(spec_n[:, :frames]) ** 2) + 1e-20
    m_db, n_db = 10 * np.log10(m_pow), 10 * np.log10(n_pow)
    diff = n_db - m_db
    offset = np.sum(diff * n_pow / n_pow.sum())
    gain_db = np.clip(strength * (diff - offset), -max_cut_db, max_boost_db)
    gain_db = np.where(m_db - m_db.max() < gate_db, np.minimum(gain_db, 0.0), gain_db)
    norm = bands.sum(axis=0)
    bin_gain = (bands.T @ 10 ** (gain_db / 20)) / np.maximum(norm, 1e-9)[:, None]
    bin_gain[norm < 1e-9] = 1.0
    _, y = istft(spec_m[:, :frames] * bin_gain, SR, nperseg=n_fft, noverlap=n_fft - hop)
    y = y[: music.size]
    return np.pad(y, (0, music.size - y.size)).astype(np.float32)


def _lu_needed(noise, music, noise_mel, music_mel, mask) -> dict[str, float]:
    from bnmusic_bridge.amplify import solve_gain_for_coverage
    from bnmusic_bridge.loudness import integrated_lufs
    from bnmusic_bridge.masking import masking_field

    offset = integrated_lufs(music[None], SR) - integrated_lufs(noise[None], SR)
    out = {}
    for model in ("smr", "spreading"):
        field = masking_field(model, noise_mel, music_mel, smr_db=21.0)
        for coverage in (0.5, 0.9):
            g = solve_gain_for_coverage(field, mask, coverage)
            lu = offset + 20 * math.log10(g) if 0 < g < math.inf else math.inf
            out[f"{model}_{int(coverage * 100)}"] = round(float(lu), 2)
    return out


def _descriptors(y: np.ndarray) -> dict[str, Any]:
    """Key strength (Essentia), beat pulse and median flatness (librosa) at 22,050 Hz."""
    try:
        import essentia.standard as es
        import librosa
    except ImportError:
        return {}
    y = librosa.resample(np.asarray(y, np.float32), orig_sr=SR, target_sr=22_050)
    y = (y / (np.max(np.abs(y)) + 1e-9) * 0.5).astype(np.float32)
    key, scale, strength = es.KeyExtractor(sampleRate=22_050)(y)
    onset = librosa.onset.onset_strength(y=y, sr=22_050)
    _, beats = librosa.beat.beat_track(onset_envelope=onset, sr=22_050)
    pulse = float(onset[beats].mean() / (onset.mean() + 1e-9)) if len(beats) else 0.0
    flat = librosa.feature.spectral_flatness(y=y)[0]
    return {
        "key": f"{key} {scale}",
        "key_strength": round(float(strength), 3),
        "beat_pulse": round(pulse, 2),
        "flatness_median": float(f"{np.median(flat):.3g}"),
    }


def _measure(noise, music, noise_mel, mask, describe: bool) -> dict[str, Any]:
    from bnmusic_bridge.alignment import floored_db, pearson
    from bnmusic_bridge.spectrogram import audio_to_mel

    music_mel = audio_to_mel(music)
    row: dict[str, Any] = _lu_needed(noise, music, noise_mel, music_mel, mask)
    row["logmel_corr"] = round(pearson(floored_db(noise_mel**2), floored_db(music_mel**2)), 3)
    if describe:
        row.update(_descriptors(music))
    return row


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SR:
        raise SystemExit(f"{path}: {rate} Hz, expected {SR}")
    return audio.T.mean(axis=0)


def _median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return float(np.median(values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout to import from")
    parser.add_argument("--label", default="current", help="name of this measurement")
    parser.add_argument("--no-descriptors", action="store_true")
    args = parser.parse_args()
    if not (DATA / "noise").is_dir():
        raise SystemExit(f"{DATA / 'noise'} is missing: the shared recordings are needed")
    sys.path.insert(0, str(args.tree.resolve()))
    sys.path.insert(1, str(REPO))
    from bnmusic_bridge import RenderRequest, render

    describe = not args.no_descriptors
    musics = {p.stem: _read(p) for p in sorted((DATA / "music").glob("*.wav"))}
    real_descriptors = {name: _descriptors(m) for name, m in musics.items()} if describe else {}
    clips: list[dict[str, Any]] = []
    real: list[dict[str, Any]] = []
    for path in sorted((DATA / "noise").glob("*.wav")):
        noise = _read(path)
        t0 = time.perf_counter()
        res = render(noise[None], SR, RenderRequest())
        render_s = time.perf_counter() - t0
        noise_mel, mask = res.analysis.noise_mel, res.analysis.mask
        music = res.music[0]
        aligned = _align_prototype(music, noise)
        clip = {
            "noise": path.stem,
            "render_s": round(render_s, 3),
            "generator": _measure(noise, music, noise_mel, mask, describe),
            "aligned": _measure(noise, aligned, noise_mel, mask, describe),
        }
        clips.append(clip)
        for name, excerpt in musics.items():
            tiled = np.tile(excerpt, int(math.ceil(noise.size / excerpt.size)))[: noise.size]
            real.append({"noise": path.stem, "music": name,
                         **_measure(noise, tiled, noise_mel, mask, False)})  # fmt: skip
        g, a = clip["generator"], clip["aligned"]
        print(f"{path.stem[:26]:26s} gen {g['smr_50']:5.1f} {g['smr_90']:5.1f} "
              f"corr {g['logmel_corr']:.2f} | aligned {a['smr_50']:5.1f} {a['smr_90']:5.1f} "
              f"corr {a['logmel_corr']:.2f}", flush=True)  # fmt: skip

    keys = [*KEYS, "logmel_corr", "key_strength", "beat_pulse", "flatness_median"]
    medians = {
        which: {k: round(_median([c[which] for c in clips], k), 6) for k in keys}
        for which in ("generator", "aligned")
    }
    real_median = {k: round(_median(real, k), 3) for k in [*KEYS, "logmel_corr"]}
    aligned = medians["aligned"]
    checks = {
        f"aligned_{k}_at_least_8_LU_under_real_music": bool(
            aligned[k] <= real_median[k] - TARGET_LU_BELOW_REAL
        )
        for k in KEYS
    }
    checks["aligned_logmel_corr_at_least_0.5"] = bool(aligned["logmel_corr"] >= TARGET_CORRELATION)
    checks["aligned_smr_50_within_7_LU_of_21"] = bool(aligned["smr_50"] <= TARGET_SMR_50_LU)
    real_range: dict[str, list[float]] = {}
    if real_descriptors and all(real_descriptors.values()):
        # Music-ness inside what the real excerpts give: key strength and beat pulse at
        # least their lowest, flatness at most their highest.
        for k in ("key_strength", "beat_pulse", "flatness_median"):
            values = [d[k] for d in real_descriptors.values()]
            real_range[k] = [min(values), max(values)]
        for which in ("generator", "aligned"):
            inside = [
                c[which]["key_strength"] >= real_range["key_strength"][0]
                and c[which]["beat_pulse"] >= real_range["beat_pulse"][0]
                and c[which]["flatness_median"] <= real_range["flatness_median"][1]
                for c in clips
            ]
            checks[f"{which}_clips_inside_real_music_descriptor_range"] = int(sum(inside))
            for k in ("key_strength", "beat_pulse"):
                checks[f"{which}_median_{k}_at_least_real_min"] = bool(
                    medians[which][k] >= real_range[k][0]
                )
            checks[f"{which}_median_flatness_at_most_real_max"] = bool(
                medians[which]["flatness_median"] <= real_range["flatness_median"][1]
            )
    measurement = {
        "tree": str(args.tree.resolve()),
        "medians": medians,
        "checks": checks,
        "clips": clips,
    }
    print(json.dumps({"medians": medians, "real_music_median": real_median,
                      "real_music_descriptor_range": real_range, "checks": checks},
                     indent=1))  # fmt: skip

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import RESULTS, write_result

    previous: dict[str, Any] = {}
    existing = RESULTS / "compose.json"
    if existing.is_file():
        previous = json.loads(existing.read_text()).get("measurements", {})
    previous[args.label] = measurement
    path = write_result(
        "compose",
        {
            "benchmark": "bench_compose",
            "command": "python benchmarks/bench_compose.py [--tree PATH --label NAME]",
            "alignment": "prototype of issue 12's alignment step: strength 1, +-12 dB, "
            "sixth-octave bands, 0.1 s smoothing (bench_compose._align_prototype)",
            "real_music": {
                "median": real_median,
                "descriptors": real_descriptors,
                "descriptor_range": real_range,
                "pairs": real,
            },
            "measurements": previous,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
