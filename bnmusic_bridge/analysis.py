"""Analysis of a noise stem that generators may use (rhythm and spectrum).

Everything here is on the analysis grid: mono, 44,100 Hz, Riffusion's 10 ms hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StemAnalysis:
    """What the pipeline measured on the whole noise stem (analysis rate, mono).

    Attributes:
        sample_rate_hz: always 44,100 (the analysis rate).
        num_samples: length of the analysed mono stem in samples at ``sample_rate_hz``.
        onset_envelope: spectral-flux onset strength, one value per 10 ms frame
            (frame ``j`` is centred on sample ``j * 441``), non-negative, arbitrary units.
        onset_times_s: detected onset times in seconds from the stem's start.
        tempo_bpm: tempo estimated from the onset envelope's periodicity, in beats per
            minute (clamped to 60..180), or None when no periodicity was found.
        beat_period_s: 60 / tempo_bpm, or None.
        beat_phase_s: time of the first beat in seconds (0 <= phase < beat_period_s).
        periodicity_strength: 0..1, how clearly periodic the onset envelope is
            (normalised autocorrelation peak).
        band_energy_db: mean mel magnitude per mel band in dB (length 512, index 0 is
            the lowest band, 0 to 10 kHz HTK mel scale), relative to the loudest band (0 dB).
        band_center_hz: centre frequency of each mel band in Hz (length 512).
        frame_energy_db: per-frame energy in dB relative to the loudest frame (0 dB).
        mask_band_share: share of high-energy-mask pixels in each mel band (length 512,
            sums to 1 when the mask is not empty).
    """

    sample_rate_hz: int
    num_samples: int
    onset_envelope: np.ndarray
    onset_times_s: np.ndarray
    tempo_bpm: float | None
    beat_period_s: float | None
    beat_phase_s: float
    periodicity_strength: float
    band_energy_db: np.ndarray
    band_center_hz: np.ndarray
    frame_energy_db: np.ndarray
    mask_band_share: np.ndarray
