"""Long noise stems made by joining the real recordings in ``shared/data/noise`` (looped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NOISE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "noise"
"""The real recordings (44.1 kHz mono WAV): ``<repo>/../shared/data/noise``."""
RATE_HZ = 44100


def noise_dir() -> Path:
    """The folder of real recordings; ``/work/shared/data/noise`` when the worktree sits
    elsewhere."""
    for cand in (NOISE_DIR, Path("/work/shared/data/noise")):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("no real recordings found (shared/data/noise)")


def write_long_stem(path: Path, seconds: float) -> Path:
    """Write a mono 44.1 kHz 24-bit WAV of ``seconds``: the recordings in name order,
    looped, each joined with a 50 ms crossfade; written block by block (bounded memory)."""
    import soundfile as sf

    clips = []
    for f in sorted(noise_dir().glob("*.wav")):
        x, sr = sf.read(f, dtype="float32", always_2d=True)
        if sr != RATE_HZ:
            continue
        clips.append(x.mean(axis=1))
    fade = int(0.05 * RATE_HZ)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    total = int(round(seconds * RATE_HZ))
    tmp = path.with_suffix(".tmp.wav")
    with sf.SoundFile(tmp, "w", RATE_HZ, 1, subtype="PCM_24", format="WAV") as out:
        written, k, tail = 0, 0, np.zeros(0, np.float32)
        while written < total:
            clip = clips[k % len(clips)].copy()
            k += 1
            if tail.size:
                clip[:fade] = clip[:fade] * ramp + tail * ramp[::-1]
            body, tail = clip[:-fade], clip[-fade:]
            body = body[: total - written]
            out.write(body)
            written += body.size
    tmp.replace(path)
    return path
