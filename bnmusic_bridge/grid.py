"""The Riffusion analysis grid and the audio facts every module shares (one home each).

Torch-free and dependency-free on purpose: the CLI, the OSC server, presets and the
Stage 2 modules read these numbers without paying for :mod:`bnmusic_bridge.spectrogram`'s
torch import. Values are Riffusion's defaults, which the BNMusic paper uses unchanged
(see ``docs`` and :mod:`bnmusic_bridge.spectrogram` for the arithmetic).
"""

from __future__ import annotations

SAMPLE_RATE_HZ = 44_100
"""Analysis (and generation) sample rate, Hz: mono audio on this grid is what Riffusion
images describe."""
HOP_SAMPLES = 441
"""STFT hop, samples (10 ms at 44.1 kHz): one image column, one lane point."""
FRAME_RATE_HZ = SAMPLE_RATE_HZ / HOP_SAMPLES
"""Analysis frames (image columns, lane points, meter values) per second: 100."""
FRAME_PERIOD_S = HOP_SAMPLES / SAMPLE_RATE_HZ
"""Time between analysis frames: 441 / 44,100 = 0.01 s."""
WIN_SAMPLES = 4_410
"""Hann window length, samples (100 ms)."""
N_FFT = 17_640
"""FFT length, samples (400 ms): the window zero-padded, 8,821 bins of 2.5 Hz."""
N_MELS = 512
"""Mel bands (image rows), HTK scale, no normalisation."""
F_MIN_HZ = 0.0
"""Lower edge of the mel filterbank, Hz."""
F_MAX_HZ = 10_000.0
"""Upper edge of the mel filterbank, Hz."""
IMAGE_FRAMES = 512
"""Columns of one Riffusion image (one generation window)."""
WINDOW_SAMPLES = (IMAGE_FRAMES - 1) * HOP_SAMPLES
"""225,351 samples (5.110 s): the audio length that yields exactly one 512-column image."""

AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".aif", ".aiff", ".mp3", ".ogg")
"""File name endings (lower case) taken as audio when a folder or glob is searched."""
