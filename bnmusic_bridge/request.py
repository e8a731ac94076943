"""What a render is asked to do (:class:`RenderRequest`) and what it gives back
(:class:`RenderResult`). Presets produce requests; flags and OSC arguments override fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError

THRESHOLD_MODELS = ("smr", "spreading")
OBJECTIVES = ("paper", "coverage")
DEVICES = ("auto", "cpu", "cuda", "mps")
SCHEDULERS = ("dpmsolver++", "ddim", "pndm", "euler", "lms")
"""Kept in step with :data:`bnmusic_bridge.generators.riffusion.SCHEDULERS` (a test checks)."""


@dataclass(frozen=True)
class RenderRequest:
    """Every parameter of one render. Units are in the names.

    Attributes:
        prompt: text prompt (style, instruments).
        negative_prompt: what the generator should avoid.
        seed: integer seed; same input + same seed = bit-identical output on the CPU.
        generator: registered generator name ("procedural", "riffusion", baselines).
        generator_params: generator-specific parameters (steps, guidance, ...).
        model: model id or local folder for model-based generators.
        device: "auto", "cpu", "cuda" or "mps".
        dtype: "auto", "float32", "float16" or "bfloat16".
        scheduler: diffusion scheduler of the riffusion generators ("dpmsolver++",
            "ddim", "pndm", "euler", "lms").
        local_files_only: never contact a model hub (model must be on disk).
        mask_area: share of the noise image marked high-energy (0.05 to 0.5).
        threshold_model: "smr" (the paper's fixed signal-to-mask ratio) or "spreading"
            (psychoacoustic model 1; the default: it needs 26 to 37 dB less gain than
            smr for 50 % coverage, medians measured in docs/blend.md).
        smr_db: signal-to-mask ratio of the smr model in dB.
        alpha: weight of the music-level term in the paper's loss.
        objective: "paper" (the paper's loss) or "coverage" (the default: the lowest
            lane that masks ``target_coverage`` in every lane window).
        target_coverage: share of each lane window's high-energy bins to mask with the
            coverage objective (0..1].
        min_gain_db: lowest lambda in dB relative to the loudness-matched music.
        max_gain_db: highest lambda in dB relative to the loudness-matched music.
        max_loudness_lu: ceiling on the blended music's loudness relative to the noise in
            LU (None: no ceiling): in every lane window the gained music is at most this
            far over the noise's integrated loudness (BS.1770, output layout). The gained
            music's sample peak is always held at -1 dBFS or under by the lane (no
            clipping); windows a cap keeps from their target are listed in
            ``RenderResult.extra["shortfall"]``.
        lane_window_s: length of one lambda window in seconds.
        lane_hop_s: hop between lambda windows in seconds.
        smoothing_s: time constant of the lane's zero-phase smoothing in seconds (2 s:
            about a bar at 120 BPM).
        max_slew_db_per_s: largest change of the lane in dB per second.
        overlap_frames: overlap of consecutive generation windows in 10 ms frames.
        effects: the music's effects chain, applied before Stage 2 so lambda accounts
            for it: a sequence of mappings, each ``{"type": "Reverb", ...parameters}``
            for a pedalboard built-in or ``{"type": "plugin", "path": ..., ...}`` for a
            VST3/AU plugin (see :mod:`bnmusic_bridge.fx`).
    """

    prompt: str = "lo-fi hip hop beat with warm piano and soft drums"
    negative_prompt: str = ""
    seed: int = 0
    generator: str = "procedural"
    generator_params: Mapping[str, Any] = field(default_factory=dict)
    model: str = "riffusion/riffusion-model-v1"
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str = "dpmsolver++"
    local_files_only: bool = False
    mask_area: float = 0.15
    threshold_model: str = "spreading"
    smr_db: float = 21.0
    alpha: float = 0.14
    objective: str = "coverage"
    target_coverage: float = 0.8
    min_gain_db: float = -30.0
    max_gain_db: float = 24.0
    max_loudness_lu: float | None = 6.0
    lane_window_s: float = 2.56
    lane_hop_s: float = 1.28
    smoothing_s: float = 2.0
    max_slew_db_per_s: float = 12.0
    overlap_frames: int = 64
    effects: tuple[Mapping[str, Any], ...] = ()

    def replace(self, **changes: Any) -> RenderRequest:
        """A copy with ``changes`` applied; unknown field names raise ParameterError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ParameterError(
                f"unknown render parameter(s) {sorted(unknown)}; known: "
                f"{sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["generator_params"] = dict(self.generator_params)
        d["effects"] = [dict(e) for e in self.effects]
        return d


def check_request(req: RenderRequest) -> None:
    """Refuse out-of-range parameters before any work, naming the field and the range."""

    def bad(name: str, allowed: str) -> ParameterError:
        return ParameterError(f"{name}={getattr(req, name)!r} is out of range; allowed: {allowed}")

    if not isinstance(req.seed, int) or isinstance(req.seed, bool) or not 0 <= req.seed < 2**32:
        raise bad("seed", "an integer from 0 to 4294967295")
    if not 0.05 <= req.mask_area <= 0.5:
        raise bad("mask_area", "0.05 to 0.5")
    if req.threshold_model not in THRESHOLD_MODELS:
        raise bad("threshold_model", " or ".join(THRESHOLD_MODELS))
    if req.objective not in OBJECTIVES:
        raise bad("objective", " or ".join(OBJECTIVES))
    if req.device not in DEVICES:
        raise bad("device", ", ".join(DEVICES))
    if req.dtype not in ("auto", "float32", "float16", "bfloat16"):
        raise bad("dtype", "auto, float32, float16, bfloat16")
    if req.scheduler not in SCHEDULERS:
        raise bad("scheduler", ", ".join(SCHEDULERS))
    if not 0.0 <= req.smr_db <= 40.0:
        raise bad("smr_db", "0 to 40 dB")
    if not 0.0 < req.alpha <= 10.0:
        raise bad("alpha", "greater than 0, at most 10")
    if not 0.0 < req.target_coverage <= 1.0:
        raise bad("target_coverage", "greater than 0, at most 1")
    if not -80.0 <= req.min_gain_db < req.max_gain_db <= 48.0:
        raise ParameterError(
            f"min_gain_db={req.min_gain_db}, max_gain_db={req.max_gain_db}: need "
            "-80 <= min_gain_db < max_gain_db <= 48 (dB)"
        )
    if req.max_loudness_lu is not None and not -40.0 <= req.max_loudness_lu <= 40.0:
        raise bad("max_loudness_lu", "-40 to 40 LU, or None for no ceiling")
    if not 0.1 <= req.lane_window_s <= 10.24:
        raise bad("lane_window_s", "0.1 to 10.24 s")
    if not 0.01 <= req.lane_hop_s <= req.lane_window_s:
        raise bad("lane_hop_s", f"0.01 s to lane_window_s ({req.lane_window_s} s)")
    if not 0.0 <= req.smoothing_s <= 30.0:
        raise bad("smoothing_s", "0 to 30 s")
    if not 0.1 <= req.max_slew_db_per_s <= 1000.0:
        raise bad("max_slew_db_per_s", "0.1 to 1000 dB/s")
    if not 8 <= req.overlap_frames <= 256:
        raise bad("overlap_frames", "8 to 256 frames (0.08 to 2.56 s)")
    if not isinstance(req.prompt, str) or len(req.prompt) > 1000:
        raise bad("prompt", "text of at most 1000 characters")


@dataclass(frozen=True)
class RenderResult:
    """Everything a render produced, on the input stem's own sample rate and length.

    Attributes:
        sample_rate_hz: the input's sample rate (every output stem has it).
        num_samples: the input's length in samples (every output stem has it).
        music: float32 ``(channels, num_samples)`` at unity gain (loudness-matched to the
            noise: the same integrated LUFS).
        music_gained: ``music`` with the lambda lane applied (the blend-ready stem).
        lane_times_s: lambda lane point times in seconds (one per 10 ms analysis frame).
        lane_gain_db: lambda at each point in dB relative to ``music``.
        window_times_s: centre of each lambda window in seconds.
        window_gain_db: the objective's raw gain per lane window in dB, before caps and
            smoothing: the paper loss's optimum (-inf: the loss chose silence there; the
            lane then holds ``min_gain_db``) or the gain the coverage target needs (+inf:
            no gain reaches it).
        coverage: overall share (0..1) of high-energy bins masked by the gained music.
        coverage_per_frame: per 10 ms frame (NaN where a frame has no high-energy bin).
        frame_rate_hz: rate of ``coverage_per_frame`` and the lane points (100 Hz).
        nmr_db: total noise-to-mask ratio in dB (lower is better masking).
        noise_lufs: integrated loudness of the noise stem (BS.1770, its own rate and
            channel layout), LUFS.
        music_lufs: integrated loudness of ``music_gained``, measured the same way.
        timings_s: seconds spent per stage.
        request: every parameter used.
        generator_diagnostics: what the generator reported per window.
        warnings: things the user should know (clamped windows, clipping, ...).
        analysis: arrays on the analysis grid for plots and metering: "noise_mel",
            "music_mel" (512 x frames, linear magnitude, mel orientation), "mask" (bool).
        source: the input path, when the render started from a file.
    """

    sample_rate_hz: int
    num_samples: int
    music: np.ndarray
    music_gained: np.ndarray
    lane_times_s: np.ndarray
    lane_gain_db: np.ndarray
    window_times_s: np.ndarray
    window_gain_db: np.ndarray
    coverage: float
    coverage_per_frame: np.ndarray
    frame_rate_hz: float
    nmr_db: float
    noise_lufs: float
    music_lufs: float
    timings_s: dict[str, float]
    request: RenderRequest
    generator_diagnostics: list[dict[str, Any]]
    warnings: tuple[str, ...]
    analysis: dict[str, np.ndarray]
    source: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_channels(self) -> int:
        return int(self.music.shape[0])
