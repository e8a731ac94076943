"""Audio in and out: reading stems, the analysis-rate conversion, atomic writes.

Buffer layout everywhere in this package is pedalboard's: float32 ``(channels, samples)``,
linear amplitude (1.0 = 0 dBFS), with the sample rate passed alongside in Hz.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, BinaryIO, overload

import numpy as np

from . import scratch
from .errors import AudioInputError, OutputError, OutputExistsError, ParameterError
from .grid import AUDIO_EXTENSIONS, SAMPLE_RATE_HZ
from .scratch import BLOCK_SAMPLES, ArrayStore, BlockArray, DiskArray, blocks

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 8
MIN_DURATION_S = 0.5
CLIP_LEVEL = 0.999
"""Samples at or above this absolute value count as clipped (reported, not refused)."""
MAX_SAMPLE_LEVEL = 1000.0
"""Samples beyond this absolute value (+60 dBFS) are refused: a float bounce may go over
0 dBFS, but not by 60 dB; such a file is corrupt or was scaled by mistake, and would
render a stem hundreds of dB over full scale."""
COMPRESSED_SUFFIXES = (".mp3", ".flac")
"""Formats whose header's length claim is checked by decoding the file once (bounded
memory) before the samples are read: a cut-off MP3 or FLAC would otherwise be padded with
silence (an Ogg file's length comes from its last page, so a cut one is read as the
shorter file it is). Measured on a 3-minute stereo stem: 0.45 s for MP3, 0.24 s for
FLAC."""
GAPLESS_SUFFIXES = (".mp3",)
"""Formats with encoder delay and padding that pedalboard's decoder keeps: it returns an
MP3 1,105 samples late (the LAME encoder's 576 plus the decoder's 529) and padded at the
end (measured: a 3.0 s click train came back 1,332 samples longer). These are decoded by
libsndfile (>= 1.1, through mpg123), which honours the LAME/Xing header's delay and
padding, so the stem has the length and timing a DAW plays; without an MP3-capable
libsndfile they fall back to pedalboard (and its offset)."""
PCM_SUFFIXES = (".wav", ".wave", ".bwf", ".aif", ".aiff")
TRUNCATION_TOLERANCE_FRAMES = 4608
"""Decoders disagree about MP3 priming and padding by up to about two MPEG frames
(2 x 1152 samples, plus the encoder delay): a shorter decode within this many frames, or
1 %, of the header's claim is not a truncation."""

BIT_DEPTHS = (16, 24, 32)
"""16 and 24 are integer PCM; 32 is 32-bit float (WAV, AIFF)."""
FILE_TYPES = ("wav", "flac", "aiff")
TEMP_MARK = ".tmp"
"""Temporary output names are ``.<name>.<pid>-<8 hex>.tmp<suffix>`` (hidden, in the
target's folder): :func:`temp_name` makes them, :func:`stale_temp_files` finds the ones
a killed process left behind."""
_TEMP_NAME = re.compile(r"^\.(?P<base>.+)\.(?P<pid>[0-9]+)-[0-9a-f]{8}\.tmp(?:\.[A-Za-z0-9]+)?$")
_OLD_TEMP_NAME = re.compile(r"^\.(?P<base>.+)\.[a-z0-9_]{8}\.tmp(?:\.[A-Za-z0-9]+)?$")
"""Before the process id was in the name (``tempfile.mkstemp``'s 8 random characters)."""


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
        audio: float32 ``(channels, num_samples)``, linear amplitude: a numpy array, or
            a :class:`~bnmusic_bridge.scratch.DiskArray` when :func:`read_stem` was given
            a disk store (a long stem; touch it only through time slices
            ``audio[:, a:b]``).
        sample_rate_hz: the stem's own sample rate in Hz.
        path: where it came from, or None for in-memory audio.
        clipped_share: share of samples at or above :data:`CLIP_LEVEL` (0..1).
        channel_mask: the WAV channel mask (``WAVE_FORMAT_EXTENSIBLE``) when the file
            has one (:func:`bnmusic_bridge.channel_layout.wav_channel_mask`), else None.
    """

    audio: np.ndarray | DiskArray
    sample_rate_hz: int
    path: Path | None = None
    clipped_share: float = 0.0
    channel_mask: int | None = None

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


def _check_layout(shape: tuple[int, ...], dtype: Any, sample_rate_hz: float, where: str) -> float:
    """:func:`check_audio`'s checks of shape, dtype, rate, channels and duration (in its
    order, with its messages); returns the rate in Hz as a float."""
    if len(shape) != 2:
        raise AudioInputError(f"{where}: audio must be (channels, samples), got shape {shape}")
    if shape[0] > shape[1] and shape[1] <= MAX_CHANNELS:
        raise AudioInputError(
            f"{where}: audio shape {shape} looks like (samples, channels); "
            "pass (channels, samples) (pedalboard's layout), e.g. audio.T"
        )
    if not np.issubdtype(dtype, np.floating):
        raise AudioInputError(f"{where}: audio must be floating point, got {dtype}")
    rate = float(sample_rate_hz)
    if not rate.is_integer() or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise AudioInputError(
            f"{where}: sample rate {sample_rate_hz} Hz is not supported "
            f"(integer rates from {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz)"
        )
    channels, samples = shape
    if channels < 1 or channels > MAX_CHANNELS:
        raise AudioInputError(f"{where}: {channels} channels; 1 to {MAX_CHANNELS} are supported")
    if samples == 0:
        raise AudioInputError(f"{where}: the file holds no audio samples")
    duration_s = samples / rate
    if duration_s < MIN_DURATION_S:
        raise AudioInputError(
            f"{where}: stem is {duration_s:.3f} s long; at least {MIN_DURATION_S} s is needed"
        )
    return rate


def _nonfinite_error(where: str, bad: int, rate: float) -> AudioInputError:
    return AudioInputError(
        f"{where}: audio holds NaN or infinite samples (first at sample {bad}, "
        f"{bad / rate:.3f} s); fix or re-bounce the stem"
    )


def _loud_error(where: str, bad: int, peak: float, rate: float) -> AudioInputError:
    level_db = 20 * np.log10(peak)
    return AudioInputError(
        f"{where}: audio peaks at {level_db:+.0f} dBFS (first sample beyond "
        f"{20 * np.log10(MAX_SAMPLE_LEVEL):+.0f} dBFS at sample {bad}, {bad / rate:.3f} s): "
        "no bounce is that loud; the file is corrupt or was scaled by mistake"
    )


class _LevelScan:
    """:func:`check_audio`'s level checks gathered block by block: the first non-finite
    and the first too-loud sample (sample index), the peak (linear) and the count of
    clipped samples, so that the stem never has to be whole in memory."""

    def __init__(self) -> None:
        self.first_nonfinite: int | None = None
        self.first_loud: int | None = None
        self.peak = 0.0
        self.clipped = 0

    def add(self, part: np.ndarray, start: int) -> None:
        """Take in samples ``start..start + part.shape[1]`` (``(channels, n)``)."""
        if self.first_nonfinite is not None:
            return  # the error is decided; the rest only has to be read
        finite = np.isfinite(part)
        if not finite.all():
            self.first_nonfinite = start + int(np.argmin(finite.all(axis=0)))
            return
        magnitude = np.abs(part)
        if part.size:
            self.peak = max(self.peak, float(np.max(magnitude)))
        if self.first_loud is None:
            loud = magnitude > MAX_SAMPLE_LEVEL
            if loud.any():
                self.first_loud = start + int(np.argmax(loud.any(axis=0)))
        self.clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))

    def check(self, where: str, rate: float) -> None:
        """Raise :func:`check_audio`'s level errors (NaN/inf first, then level)."""
        if self.first_nonfinite is not None:
            raise _nonfinite_error(where, self.first_nonfinite, rate)
        if self.first_loud is not None:
            raise _loud_error(where, self.first_loud, self.peak, rate)


def check_audio(
    audio: np.ndarray | BlockArray, sample_rate_hz: float, path: Path | None = None
) -> Stem:
    """Validate a buffer and wrap it as a :class:`Stem`.

    Accepts ``(samples,)`` (mono) or ``(channels, samples)``. Refuses NaN/inf, empty or
    too-short audio, sample rates outside 8..192 kHz and more than 8 channels; every
    error names the file (or "<audio array>") and the problem.

    A 2-D float32 :class:`~bnmusic_bridge.scratch.DiskArray` is checked block by block
    (:data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` samples at a time) and kept as the
    stem's audio: same errors, same clipped share.
    """
    where = _name(path)
    if isinstance(audio, DiskArray) and audio.ndim == 2 and audio.dtype == np.float32:
        rate = _check_layout(audio.shape, audio.dtype, sample_rate_hz, where)
        scan = _LevelScan()
        for a, b in scratch.blocks(audio.shape[1], scratch.BLOCK_SAMPLES):
            scan.add(audio[:, a:b], a)
        scan.check(where, rate)
        return Stem(
            audio=audio,
            sample_rate_hz=int(rate),
            path=path,
            clipped_share=float(scan.clipped / audio.size),
        )
    arr = np.asarray(audio)
    if arr.ndim == 1:
        arr = arr[None, :]
    rate = _check_layout(arr.shape, arr.dtype, sample_rate_hz, where)
    finite = np.isfinite(arr)
    if not finite.all():
        raise _nonfinite_error(where, int(np.argmin(finite.all(axis=0))), rate)
    loud = np.abs(arr) > MAX_SAMPLE_LEVEL
    if loud.any():
        bad = int(np.argmax(loud.any(axis=0)))
        raise _loud_error(where, bad, float(np.max(np.abs(arr))), rate)
    arr = arr.astype(np.float32, copy=False)
    clipped = float(np.mean(np.abs(arr) >= CLIP_LEVEL))
    return Stem(audio=arr, sample_rate_hz=int(rate), path=path, clipped_share=clipped)


def peak_and_means(audio: np.ndarray | BlockArray) -> tuple[float, np.ndarray]:
    """The peak and the per-channel means of ``(channels, samples)`` audio.

    Returns:
        ``(peak, means)``: the largest absolute sample (linear, 1.0 = 0 dBFS) and the
        mean of each channel, ``(channels, 1)`` in the audio's dtype (float32). For a
        numpy array these are ``np.max(np.abs(audio))`` and
        ``audio.mean(axis=1, keepdims=True)`` themselves; a block array is walked a
        block at a time, the peak exactly, the means summed in float64 and rounded to
        float32 once (numpy's float32 pairwise mean rounds a little differently: they
        agree to a few float32 ulps, see ``tests/test_audio_blocks.py``).
    """
    return _peak_and_means(audio, with_peak=True)


def channel_means(audio: np.ndarray | BlockArray) -> np.ndarray:
    """The per-channel means of :func:`peak_and_means` alone (no pass for the peak)."""
    return _peak_and_means(audio, with_peak=False)[1]


def _peak_and_means(audio: np.ndarray | BlockArray, *, with_peak: bool) -> tuple[float, np.ndarray]:
    if isinstance(audio, np.ndarray):
        peak = float(np.max(np.abs(audio))) if with_peak else 0.0
        return peak, audio.mean(axis=1, keepdims=True)
    channels, n = audio.shape
    peak = 0.0
    sums = np.zeros(channels, dtype=np.float64)
    for a, b in scratch.blocks(n, scratch.BLOCK_SAMPLES):
        part = audio[:, a:b]
        if with_peak:
            peak = max(peak, float(np.max(np.abs(part))))
        sums += part.sum(axis=1, dtype=np.float64)
    means = (sums / n).astype(audio.dtype)[:, None]
    return peak, means


@dataclass(frozen=True)
class StemInfo:
    """What an audio file's header says, checked against the file's size.

    Attributes:
        sample_rate_hz: sample rate in Hz.
        num_channels: channel count.
        num_frames: samples per channel the header promises (for WAV and AIFF, no more
            than the file holds: a larger claim is refused by :func:`probe_stem`).
    """

    sample_rate_hz: int
    num_channels: int
    num_frames: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate_hz if self.sample_rate_hz > 0 else 0.0


def probe_stem(path: str | os.PathLike[str]) -> StemInfo:
    """Read an audio file's header only (no samples), and refuse a WAV or AIFF whose
    header promises more samples than the file holds, before anything is allocated.

    Raises:
        AudioInputError: missing, empty, a folder, not audio, or truncated.
    """
    from pedalboard.io import AudioFile

    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p}: no such file")
    if p.is_dir():
        raise AudioInputError(f"{p}: is a folder, not an audio file")
    if p.stat().st_size == 0:
        raise AudioInputError(f"{p}: the file is empty (0 bytes)")
    gapless = _gapless_info(p)
    if gapless is not None:
        return gapless
    try:
        with AudioFile(str(p)) as f:
            info = StemInfo(int(f.samplerate), int(f.num_channels), int(f.frames))
    except Exception as e:  # pedalboard raises ValueError/RuntimeError for bad files
        raise AudioInputError(f"{p}: not a readable audio file ({e})") from e
    available = _pcm_frames_on_disk(p)
    if available is not None and available < info.num_frames:
        raise AudioInputError(
            f"{p}: file is truncated: its header promises {info.num_frames} samples, only "
            f"{available} are in the file"
        )
    return info


def read_stem(
    path: str | os.PathLike[str],
    *,
    max_duration_s: float | None = None,
    store: ArrayStore | None = None,
) -> Stem:
    """Read an audio file (WAV, FLAC, AIFF, MP3, OGG) through ``pedalboard.io.AudioFile``;
    MP3 through libsndfile, without the encoder delay and padding (see
    :data:`GAPLESS_SUFFIXES`).

    Nothing is allocated on the header's word: a WAV/AIFF header's length is checked
    against the file size first, and a compressed file (MP3, FLAC, OGG) is decoded once
    in blocks to count its samples, so a cut-off file is refused instead of padded with
    silence.

    Args:
        max_duration_s: refuse a stem longer than this (seconds), from its header,
            before its samples are read (None: no limit).
        store: where the samples go. A disk store (``store.on_disk``): the file is
            decoded :data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` samples at a time
            straight into a :class:`~bnmusic_bridge.scratch.DiskArray`, checked block
            by block, so the stem is never whole in memory (same samples, same errors).
            None or a memory store: a numpy array.

    Raises:
        AudioInputError: the file is missing, empty, not audio, truncated, too long,
            invalid, or holds absurd levels (see :func:`check_audio`).
    """

    p = Path(path)
    info = probe_stem(p)
    if max_duration_s is not None and info.duration_s > max_duration_s:
        raise AudioInputError(
            f"{p}: the stem is {info.duration_s / 60:.1f} min long; at most "
            f"{max_duration_s / 60:g} min are rendered here"
        )
    decoded = _decoded_frames(p)
    if decoded is not None and decoded < info.num_frames - max(
        TRUNCATION_TOLERANCE_FRAMES, info.num_frames // 100
    ):
        raise AudioInputError(
            f"{p}: file is truncated: its header promises {info.num_frames} samples, only "
            f"{decoded} could be decoded"
        )
    if store is not None and store.on_disk:
        stem = _read_stem_blocks(p, info, store)
    else:
        stem = _read_stem_whole(p, info)
    if stem.num_channels > 2:
        from .channel_layout import wav_channel_mask

        stem = dataclasses.replace(stem, channel_mask=wav_channel_mask(p))
    return stem


def _read_failed(p: Path, info: StemInfo, e: Exception) -> AudioInputError:
    """The error for a decoder's exception while the samples are read."""
    if isinstance(e, MemoryError):
        return AudioInputError(
            f"{p}: not enough memory to read {info.num_frames} samples x "
            f"{info.num_channels} channels ({info.duration_s / 60:.1f} min)"
        )
    return AudioInputError(f"{p}: not a readable audio file ({e})")


def _read_stem_whole(p: Path, info: StemInfo) -> Stem:
    """The samples of a probed file in one numpy array, checked by :func:`check_audio`."""
    from pedalboard.io import AudioFile

    rate: float
    try:
        if _gapless_info(p) is not None:
            rate, expected, audio = info.sample_rate_hz, info.num_frames, _read_gapless(p)
        else:
            with AudioFile(str(p)) as f:
                rate = f.samplerate
                expected = min(f.frames, info.num_frames)
                audio = f.read(expected)
    except AudioInputError:
        raise
    except Exception as e:  # pedalboard raises ValueError/RuntimeError for bad files
        raise _read_failed(p, info, e) from e
    if audio.shape[1] < expected:
        raise _truncated(p, expected, audio.shape[1])
    return check_audio(audio, rate, p)


def _truncated(p: Path, expected: int, got: int) -> AudioInputError:
    return AudioInputError(
        f"{p}: file is truncated: its header promises {expected} samples, only "
        f"{got} are in the file"
    )


def _read_stem_blocks(p: Path, info: StemInfo, store: ArrayStore) -> Stem:
    """The samples of a probed file decoded block by block into ``store`` and checked
    as they go: the same samples, errors and clipped share as :func:`_read_stem_whole`
    (errors in its order: decoding, truncation, layout, then levels)."""
    from pedalboard.io import AudioFile

    scan = _LevelScan()
    rate: float
    try:
        if _gapless_info(p) is not None:
            import soundfile

            with soundfile.SoundFile(str(p)) as f:
                rate, expected = info.sample_rate_hz, info.num_frames
                audio = store.empty((int(f.channels), expected), np.float32)

                def decode(k: int) -> np.ndarray:
                    data = f.read(k, dtype="float32", always_2d=True)
                    return np.ascontiguousarray(data.T)

                got = _decode_into(audio, decode, scan)
        else:
            with AudioFile(str(p)) as f:
                rate = f.samplerate
                expected = min(f.frames, info.num_frames)
                audio = store.empty((int(f.num_channels), expected), np.float32)
                got = _decode_into(audio, f.read, scan)
    except AudioInputError:
        raise
    except Exception as e:  # pedalboard raises ValueError/RuntimeError for bad files
        raise _read_failed(p, info, e) from e
    if got < expected:
        raise _truncated(p, expected, got)
    where = _name(p)
    checked_rate = _check_layout(audio.shape, audio.dtype, rate, where)
    scan.check(where, checked_rate)
    clipped = float(scan.clipped / (audio.shape[0] * audio.shape[1]))
    return Stem(audio=audio, sample_rate_hz=int(checked_rate), path=p, clipped_share=clipped)


def _decode_into(audio: np.ndarray | DiskArray, decode: Any, scan: _LevelScan) -> int:
    """Fill ``audio`` (``(channels, frames)``) from ``decode(n)`` (the next at most ``n``
    frames as float32 ``(channels, k)``, ``k = 0`` at the end), a block of
    :data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` frames at a time, each block checked
    by ``scan``; returns the frames decoded (fewer than asked: the file is short)."""
    expected = audio.shape[1]
    done = 0
    while done < expected:
        part = decode(min(scratch.BLOCK_SAMPLES, expected - done))
        k = int(part.shape[1])
        if k == 0:
            break
        audio[:, done : done + k] = part
        scan.add(part, done)
        done += k
    return done


def _gapless_info(p: Path) -> StemInfo | None:
    """The header of a :data:`GAPLESS_SUFFIXES` file as libsndfile reads it (delay and
    padding removed); None for other formats or when libsndfile cannot read it."""
    if p.suffix.lower() not in GAPLESS_SUFFIXES:
        return None
    try:
        import soundfile

        i = soundfile.info(str(p))
    except Exception:
        return None
    return StemInfo(int(i.samplerate), int(i.channels), int(i.frames))


def _read_gapless(p: Path) -> np.ndarray:
    """A :data:`GAPLESS_SUFFIXES` file decoded by libsndfile: float32 ``(channels,
    samples)``, the encoder delay and padding left out."""
    import soundfile

    data, _ = soundfile.read(str(p), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T)


def _pcm_frames_on_disk(p: Path) -> int | None:
    """Frames actually present in a WAV/AIFF file, counted by libsndfile from the file
    size (pedalboard trusts the header and pads a cut-off file with silence)."""
    if p.suffix.lower() not in PCM_SUFFIXES:
        return None
    try:
        import soundfile

        return int(soundfile.info(str(p)).frames)
    except Exception:
        return None


def _decoded_frames(p: Path) -> int | None:
    """Samples per channel a compressed file really decodes to, counted by libsndfile in
    blocks (bounded memory); None when libsndfile cannot read the format (then the
    header is trusted).

    Raises:
        AudioInputError: the decoder fails part-way (a cut-off FLAC loses sync).
    """
    if p.suffix.lower() not in COMPRESSED_SUFFIXES:
        return None
    try:
        import soundfile

        f = soundfile.SoundFile(str(p))
    except Exception:
        return None
    frames = 0
    try:
        with f:
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                frames += block.shape[0]
    except Exception as e:
        raise AudioInputError(f"{p}: file is truncated or corrupt ({e})".replace("\n", " ")) from e
    return frames


@overload
def resample(
    audio: np.ndarray | BlockArray,
    from_rate_hz: int,
    to_rate_hz: int,
    num_samples: int,
    *,
    store: None = None,
) -> np.ndarray: ...


@overload
def resample(
    audio: np.ndarray | BlockArray,
    from_rate_hz: int,
    to_rate_hz: int,
    num_samples: int,
    *,
    store: ArrayStore,
) -> np.ndarray | DiskArray: ...


def resample(
    audio: np.ndarray | BlockArray,
    from_rate_hz: int,
    to_rate_hz: int,
    num_samples: int,
    *,
    store: ArrayStore | None = None,
) -> np.ndarray | DiskArray:
    """Resample ``(channels, samples)`` audio and return exactly ``num_samples`` samples.

    Uses pedalboard's latency-compensated windowed-sinc resampler, so sample ``n`` at
    ``from_rate_hz`` lands at ``n * to_rate_hz / from_rate_hz``; the last sample is
    padded with zeros or trimmed to the requested length.

    A block array (or a ``store``) is resampled a block of
    :data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` samples at a time into
    ``store.empty((channels, num_samples))`` (None: a numpy array): the streaming
    resampler gives the same samples fed in blocks as in one call. A numpy array
    without a store takes the one-call path (and may come back as ``audio`` itself when
    the rate and length already match).
    """
    if store is None and isinstance(audio, np.ndarray):
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
                [rs.process(np.ascontiguousarray(audio, dtype=np.float32)), rs.process(None)],
                axis=1,
            )
        return fit_length(out, num_samples)
    target = (store or scratch.MemoryStore()).empty((audio.shape[0], num_samples), np.float32)
    for start, part in _resampled_blocks(audio, from_rate_hz, to_rate_hz, num_samples):
        target[:, start : start + part.shape[1]] = part
    return target


def _resampled_blocks(
    audio: np.ndarray | BlockArray, from_rate_hz: int, to_rate_hz: int, num_samples: int
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`resample`'s output in pieces: ``(start, float32 (channels, k))`` in order,
    covering samples ``0..num_samples`` exactly (trimmed, then zero-padded at the end);
    the input is read a block of :data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` samples at
    a time."""
    channels, n = audio.shape
    done = 0

    def take(y: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal done
        k = min(y.shape[1], num_samples - done)
        if k > 0:
            yield done, y[:, :k]
            done += k

    if from_rate_hz == to_rate_hz:
        for a, b in scratch.blocks(min(n, num_samples), scratch.BLOCK_SAMPLES):
            yield from take(np.ascontiguousarray(audio[:, a:b], dtype=np.float32))
    else:
        import pedalboard
        from pedalboard.io import StreamResampler

        rs = StreamResampler(
            float(from_rate_hz),
            float(to_rate_hz),
            channels,
            pedalboard.Resample.Quality.WindowedSinc256,
        )
        for a, b in scratch.blocks(n, scratch.BLOCK_SAMPLES):
            if done >= num_samples:
                break  # the rest would be trimmed
            yield from take(rs.process(np.ascontiguousarray(audio[:, a:b], dtype=np.float32)))
        if done < num_samples:
            yield from take(rs.process(None))
    for a, b in scratch.blocks(num_samples - done, scratch.BLOCK_SAMPLES):
        yield done + a, np.zeros((channels, b - a), dtype=np.float32)


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


@overload
def to_analysis_mono(stem: Stem, *, store: None = None) -> np.ndarray: ...


@overload
def to_analysis_mono(stem: Stem, *, store: ArrayStore) -> np.ndarray | DiskArray: ...


def to_analysis_mono(stem: Stem, *, store: ArrayStore | None = None) -> np.ndarray | DiskArray:
    """Mix the stem down to mono (channel mean) at 44.1 kHz: float32 ``(samples,)``.

    A numpy stem without a disk store takes the whole-array path. Otherwise the channel
    mean is taken and resampled a block at a time
    (:data:`~bnmusic_bridge.scratch.BLOCK_SAMPLES` samples) into
    ``store.empty((samples,))`` (None: a numpy array): the same samples, since the
    channel mean has no reduction along time and the streaming resampler gives the same
    output fed in blocks.
    """
    n = analysis_length(stem.num_samples, stem.sample_rate_hz)
    if isinstance(stem.audio, np.ndarray) and (store is None or not store.on_disk):
        mono = stem.audio.mean(axis=0, keepdims=True)
        return resample(mono, stem.sample_rate_hz, SAMPLE_RATE_HZ, n)[0]
    mix = scratch.ChannelMean(stem.audio, keepdims=True)
    out = (store or scratch.MemoryStore()).empty((n,), np.float32)
    for start, part in _resampled_blocks(mix, stem.sample_rate_hz, SAMPLE_RATE_HZ, n):
        out[start : start + part.shape[1]] = part[0]
    return out


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
    audio: np.ndarray | BlockArray,
    sample_rate_hz: int,
    *,
    bit_depth: int = 24,
    force: bool = False,
) -> Path:
    """Write ``(channels, samples)`` audio atomically; the format follows the suffix.

    ``audio`` may be a numpy array or a block array (a :class:`~bnmusic_bridge.scratch.DiskArray`
    of a long stem): it is read and encoded a block of samples at a time
    (:func:`encode_audio`), never whole.

    The file is written to a temporary name in the same folder, then linked into place
    (which fails if the target exists) or, with ``force=True``, renamed over it. A
    failure leaves neither a partial file nor a changed original.

    Args:
        bit_depth: 16 or 24 (integer PCM) or 32 (float; WAV and AIFF only).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is False.
        ParameterError: unsupported bit depth or file type.
    """
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

    def write(tmp: str) -> None:
        with open(tmp, "r+b") as f:
            encode_audio(f, audio, sample_rate_hz, bit_depth=bit_depth, file_type=suffix)

    return _atomic(p, write, force=force)


def encode_audio(
    file: BinaryIO,
    audio: np.ndarray | BlockArray,
    sample_rate_hz: int,
    *,
    bit_depth: int,
    file_type: str,
    channel_mask: int | None = None,
    block_samples: int = BLOCK_SAMPLES,
) -> None:
    """Encode ``(channels, samples)`` audio into an open, seekable binary file (the same
    bytes :func:`write_audio` writes to a path).

    The audio is read ``block_samples`` samples at a time (``audio[:, a:b]``) and each
    block appended to the encoder, so a :class:`~bnmusic_bridge.scratch.DiskArray` is
    never loaded whole; the encoders' output does not depend on how the samples are
    split into writes, so the bytes equal those of one whole-array write.

    Args:
        bit_depth: 16 or 24 (integer PCM; overs are clipped) or 32 (float).
        file_type: "wav", "flac" or "aiff".
        channel_mask: the speakers of a WAV with more than two channels (WAV channel
            mask bits, :mod:`bnmusic_bridge.channel_layout`); None: the encoder's default.
        block_samples: samples per write (per channel).
    """
    from pedalboard.io import AudioFile

    channels, length = int(audio.shape[0]), int(audio.shape[1])
    # pedalboard infers the layout of the first write from its shape and refuses a
    # square one; a block longer than the channel count is never square.
    size = max(int(block_samples), channels + 1)
    with AudioFile(
        file, "w", float(sample_rate_hz), channels, bit_depth=bit_depth, format=file_type
    ) as f:
        if length == 0:
            f.write(np.zeros((channels, 0), dtype=np.float32))
        for a, b in blocks(length, size):
            data = np.ascontiguousarray(audio[:, a:b], dtype=np.float32)
            if bit_depth != 32:
                # Integer formats cannot hold overs; clipping here is a last resort, and
                # the pipeline reports its peak level so nothing clips silently upstream.
                data = np.clip(data, -1.0, 1.0)
            f.write(data)
    if channel_mask is not None and file_type == "wav" and channels > 2:
        from .channel_layout import set_wav_channel_mask

        set_wav_channel_mask(file, channel_mask)


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


def temp_name(final_name: str) -> str:
    """A fresh hidden temporary name for a file to be renamed to ``final_name`` in the
    same folder: ``.<stem>.<pid>-<8 hex>.tmp<suffix>`` (the suffix kept, so encoders pick
    the format from it; the process id, so a later run can tell a dead writer's leftovers
    from a live one's work, see :func:`remove_stale_temp_files`)."""
    p = PurePath(final_name)
    return f".{p.stem}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_MARK}{p.suffix}"


PROCESS_START_S = time.time()
"""When this module was imported (about when the process started): temporary files
older than this cannot be this process's own work."""
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or cannot tell: keep its files
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str] | int) -> list[str]:
    """Remove the temporary files a killed writer of this project left in ``folder`` (a
    path or an open folder descriptor); returns the names removed.

    A file is stale when its name has the form :func:`temp_name` gives, it was last
    changed before this process started, and the process named in it is gone (names
    from before the process id was in them: only the age counts). Other files, symlinks
    and folders are never touched.
    """
    removed: list[str] = []
    fd = folder if isinstance(folder, int) else None
    try:
        names = os.listdir(fd if fd is not None else os.fspath(folder))
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if m is not None:
            if _pid_alive(int(m.group("pid"))):
                continue
        elif _OLD_TEMP_NAME.match(name) is None:
            continue
        try:
            if fd is not None:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            else:
                st = os.stat(os.path.join(os.fspath(folder), name), follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= PROCESS_START_S:
                continue
            if fd is not None:
                os.unlink(name, dir_fd=fd)
            else:
                os.unlink(os.path.join(os.fspath(folder), name))
            removed.append(name)
        except OSError:
            continue
    return removed


def _atomic(path: Path, write_fn, *, force: bool) -> Path:  # type: ignore[no-untyped-def]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        tmp = str(path.parent / temp_name(path.name))
        # 0o666 less the umask: outputs get the usual permissions.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o666)
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror or e})") from e
    os.close(fd)
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
