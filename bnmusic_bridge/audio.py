"""Audio in and out: reading stems, the analysis-rate conversion, atomic writes.

Buffer layout everywhere in this package is pedalboard's: float32 ``(channels, samples)``,
linear amplitude (1.0 = 0 dBFS), with the sample rate passed alongside in Hz.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioInputError, OutputError, OutputExistsError, ParameterError
from .grid import AUDIO_EXTENSIONS, SAMPLE_RATE_HZ

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 8
MIN_DURATION_S = 0.5
CLIP_LEVEL = 0.999
"""Samples at or above this absolute value count as clipped (reported, not refused)."""

BIT_DEPTHS = (16, 24, 32)
"""16 and 24 are integer PCM; 32 is 32-bit float (WAV, AIFF)."""
FILE_TYPES = ("wav", "flac", "aiff")



def audio_files_in(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files (:data:`~bnmusic_bridge.grid.AUDIO_EXTENSIONS`, any case) under
    ``folder``, searched recursively, hidden files and folders skipped, sorted by path."""
    root = Path(folder)
    return sorted(
        f
        for f in root.rglob("*")
        if f.is_file()
        and f.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(root).parts)
    )

@dataclass(frozen=True)
class Stem:
    """An audio stem as read from disk (or handed over as numpy).

    Attributes:
        audio: float32 ``(channels, num_samples)``, linear amplitude.
        sample_rate_hz: the stem's own sample rate in Hz.
        path: where it came from, or None for in-memory audio.
        clipped_share: share of samples at or above :data:`CLIP_LEVEL` (0..1).
    """

    audio: np.ndarray
    sample_rate_hz: int
    path: Path | None = None
    clipped_share: float = 0.0

    @property
    def num_channels(self) -> int:
        return int(self.audio.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.audio.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz


def _name(path: Path | None) -> str:
    return str(path) if path is not None else "<audio array>"


def check_audio(
    audio: np.ndarray, sample_rate_hz: float, path: Path | None = None
) -> Stem:
    """Validate a buffer and wrap it as a :class:`Stem`.

    Accepts ``(samples,)`` (mono) or ``(channels, samples)``. Refuses NaN/inf, empty or
    too-short audio, sample rates outside 8..192 kHz and more than 8 channels; every
    error names the file (or "<audio array>") and the problem.
    """
    where = _name(path)
    arr = np.asarray(audio)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AudioInputError(f"{where}: audio must be (channels, samples), got shape {arr.shape}")
    if arr.shape[0] > arr.shape[1] and arr.shape[1] <= MAX_CHANNELS:
        raise AudioInputError(
            f"{where}: audio shape {arr.shape} looks like (samples, channels); "
            "pass (channels, samples) (pedalboard's layout), e.g. audio.T"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioInputError(f"{where}: audio must be floating point, got {arr.dtype}")
    rate = float(sample_rate_hz)
    if not rate.is_integer() or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise AudioInputError(
            f"{where}: sample rate {sample_rate_hz} Hz is not supported "
            f"(integer rates from {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz)"
        )
    channels, samples = arr.shape
    if channels < 1 or channels > MAX_CHANNELS:
        raise AudioInputError(f"{where}: {channels} channels; 1 to {MAX_CHANNELS} are supported")
    if samples == 0:
        raise AudioInputError(f"{where}: the file holds no audio samples")
    duration_s = samples / rate
    if duration_s < MIN_DURATION_S:
        raise AudioInputError(
            f"{where}: stem is {duration_s:.3f} s long; at least {MIN_DURATION_S} s is needed"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(np.argmin(finite.all(axis=0)))
        raise AudioInputError(
            f"{where}: audio holds NaN or infinite samples (first at sample {bad}, "
            f"{bad / rate:.3f} s); fix or re-bounce the stem"
        )
    arr = arr.astype(np.float32, copy=False)
    clipped = float(np.mean(np.abs(arr) >= CLIP_LEVEL))
    return Stem(audio=arr, sample_rate_hz=int(rate), path=path, clipped_share=clipped)


def read_stem(path: str | os.PathLike[str]) -> Stem:
    """Read an audio file (WAV, FLAC, AIFF, MP3, OGG) through ``pedalboard.io.AudioFile``.

    Raises:
        AudioInputError: the file is missing, empty, not audio, truncated or invalid.
    """
    from pedalboard.io import AudioFile

    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p}: no such file")
    if p.is_dir():
        raise AudioInputError(f"{p}: is a folder, not an audio file")
    if p.stat().st_size == 0:
        raise AudioInputError(f"{p}: the file is empty (0 bytes)")
    try:
        with AudioFile(str(p)) as f:
            rate = f.samplerate
            expected = f.frames
            audio = f.read(f.frames)
    except AudioInputError:
        raise
    except Exception as e:  # pedalboard raises ValueError/RuntimeError for bad files
        raise AudioInputError(f"{p}: not a readable audio file ({e})") from e
    available = _pcm_frames_on_disk(p)
    if audio.shape[1] < expected or (available is not None and available < expected):
        got = min(audio.shape[1], available if available is not None else audio.shape[1])
        raise AudioInputError(
            f"{p}: file is truncated: its header promises {expected} samples, only "
            f"{got} are in the file"
        )
    return check_audio(audio, rate, p)


def _pcm_frames_on_disk(p: Path) -> int | None:
    """Frames actually present in a WAV/AIFF file, counted by libsndfile from the file
    size (pedalboard trusts the header and pads a cut-off file with silence)."""
    if p.suffix.lower() not in (".wav", ".wave", ".bwf", ".aif", ".aiff"):
        return None
    try:
        import soundfile

        return int(soundfile.info(str(p)).frames)
    except Exception:
        return None


def resample(audio: np.ndarray, from_rate_hz: int, to_rate_hz: int, num_samples: int) -> np.ndarray:
    """Resample ``(channels, samples)`` audio and return exactly ``num_samples`` samples.

    Uses pedalboard's latency-compensated windowed-sinc resampler, so sample ``n`` at
    ``from_rate_hz`` lands at ``n * to_rate_hz / from_rate_hz``; the last sample is
    padded with zeros or trimmed to the requested length.
    """
    if from_rate_hz == to_rate_hz:
        out = audio
    else:
        import pedalboard
        from pedalboard.io import StreamResampler

        rs = StreamResampler(
            float(from_rate_hz),
            float(to_rate_hz),
            audio.shape[0],
            pedalboard.Resample.Quality.WindowedSinc256,
        )
        out = np.concatenate(
            [rs.process(np.ascontiguousarray(audio, dtype=np.float32)), rs.process(None)], axis=1
        )
    return fit_length(out, num_samples)


def fit_length(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad ``(channels, samples)`` to exactly ``num_samples``."""
    n = audio.shape[1]
    if n >= num_samples:
        return np.ascontiguousarray(audio[:, :num_samples], dtype=np.float32)
    pad = np.zeros((audio.shape[0], num_samples - n), dtype=np.float32)
    return np.concatenate([audio.astype(np.float32, copy=False), pad], axis=1)


def analysis_length(num_samples: int, sample_rate_hz: int) -> int:
    """Length in samples at 44.1 kHz of a stem of ``num_samples`` at ``sample_rate_hz``."""
    return int(round(num_samples * SAMPLE_RATE_HZ / sample_rate_hz))


def to_analysis_mono(stem: Stem) -> np.ndarray:
    """Mix the stem down to mono (channel mean) at 44.1 kHz: float32 ``(samples,)``."""
    mono = stem.audio.mean(axis=0, keepdims=True)
    n = analysis_length(stem.num_samples, stem.sample_rate_hz)
    return resample(mono, stem.sample_rate_hz, SAMPLE_RATE_HZ, n)[0]


def match_channels(audio: np.ndarray, num_channels: int) -> np.ndarray:
    """Map 1- or 2-channel music onto ``num_channels`` output channels.

    Mono is copied to every channel. Stereo to mono is the channel mean; stereo to
    more channels puts left on even-numbered channels (0, 2, ...) and right on odd ones,
    so a 5.1 or 7.1 layout gets the music on every speaker without phase tricks.
    """
    src = audio.shape[0]
    if src == num_channels:
        return audio
    if src == 1:
        return np.repeat(audio, num_channels, axis=0)
    if num_channels == 1:
        return audio.mean(axis=0, keepdims=True)
    return np.stack([audio[i % src] for i in range(num_channels)])


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sample_rate_hz: int,
    *,
    bit_depth: int = 24,
    force: bool = False,
) -> Path:
    """Write ``(channels, samples)`` audio atomically; the format follows the suffix.

    The file is written to a temporary name in the same folder, then linked into place
    (which fails if the target exists) or, with ``force=True``, renamed over it. A
    failure leaves neither a partial file nor a changed original.

    Args:
        bit_depth: 16 or 24 (integer PCM) or 32 (float; WAV and AIFF only).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is False.
        ParameterError: unsupported bit depth or file type.
    """
    from pedalboard.io import AudioFile

    p = Path(path)
    suffix = p.suffix.lower().lstrip(".")
    if suffix == "aif":
        suffix = "aiff"
    if suffix not in FILE_TYPES:
        raise ParameterError(f"{p}: output type {suffix!r} not supported; use one of {FILE_TYPES}")
    if bit_depth not in BIT_DEPTHS:
        raise ParameterError(f"{p}: bit depth {bit_depth} not supported; use one of {BIT_DEPTHS}")
    if bit_depth == 32 and suffix == "flac":
        raise ParameterError(f"{p}: FLAC stores 16 or 24 bit integers, not 32-bit float")
    if p.exists() and not force:
        raise OutputExistsError(f"{p}: exists already; pass --force to overwrite it")
    data = np.ascontiguousarray(audio, dtype=np.float32)
    if bit_depth != 32:
        # Integer formats cannot hold overs; clipping here is a last resort, and the
        # pipeline reports its peak level so nothing clips silently upstream.
        data = np.clip(data, -1.0, 1.0)

    def write(tmp: str) -> None:
        with AudioFile(tmp, "w", float(sample_rate_hz), data.shape[0], bit_depth=bit_depth) as f:
            f.write(data)

    return _atomic(p, write, force=force)


def check_output_dir(folder: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output folder that cannot take files: a file in the
    way, or no write permission where the folder is (or would be created).

    Raises:
        OutputError: naming the folder and the problem.
    """
    d = Path(folder)
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"output folder {d}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {d}: no permission to write in {probe}")
    return d


def _atomic(path: Path, write_fn, *, force: bool) -> Path:  # type: ignore[no-untyped-def]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=str(path.parent)
        )
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror or e})") from e
    os.close(fd)
    # mkstemp creates owner-only files; outputs should get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        try:
            write_fn(tmp)
        except OSError as e:
            raise OutputError(f"{path}: writing failed ({e.strerror or e})") from e
        except RuntimeError as e:  # pedalboard reports a full disk this way
            raise OutputError(f"{path}: writing failed ({e})") from e
        if force:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _link_no_clobber(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError as e:
        raise OutputExistsError(f"{path}: exists already; pass --force to overwrite it") from e
    except OSError:
        # Filesystems without hard links (some network and FUSE mounts): claim the name
        # exclusively, then rename over the empty placeholder.
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError as e:
            raise OutputExistsError(f"{path}: exists already; pass --force to overwrite it") from e
        os.close(fd)
        os.replace(tmp, path)
        open(tmp, "wb").close()  # the caller unlinks tmp


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, force: bool = False) -> Path:
    """Write bytes (JSON, CSV, PNG, MIDI, ...) with the same atomic, no-clobber rules as
    :func:`write_audio`."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(f"{p}: exists already; pass --force to overwrite it")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return _atomic(p, write, force=force)
