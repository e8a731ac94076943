"""The render pipeline: the one place where the BNMusic steps are put in order.

The CLI, the OSC server, batch rendering and pedalboard scripts all call
:func:`render` (numpy audio in) or :func:`render_file` (a path in). Data flows one way:
check -> load + analyse -> generate -> stitch -> loudness-match -> threshold + lambda ->
effects -> result. Writing files is :mod:`bnmusic_bridge.export`'s job.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import audio as audio_io
from .align import AlignSettings, align_music
from .analysis import StemAnalysis, analyse_stem
from .channel_layout import place_music, stem_speakers
from .errors import AudioInputError, GeneratorError
from .generators.base import (
    GenerationSettings,
    Generator,
    NoiseWindow,
    ProgressFn,
    WindowMusic,
)
from .grid import FRAME_RATE_HZ, IMAGE_FRAMES, SAMPLE_RATE_HZ, WINDOW_SAMPLES
from .loudness import integrated_lufs
from .mask import enlarge_mask, high_energy_mask
from .progress import sub_progress
from .request import TRACK_GENERATOR, RenderRequest, check_request
from .result import AlignmentSummary, AnalysisArrays, RenderDetails, RenderResult
from .scratch import (
    ArrayStore,
    BlockArray,
    ChannelMean,
    Mapped,
    ZeroPadded,
    blocks,
    copy_into,
    crop,
    is_whole,
    store_for,
)
from .windows import WindowPlan, plan_windows, stitch

if TYPE_CHECKING:
    from .blend import Blend  # blend imports torch (through masking): lazy below

SILENCE_PEAK_DBFS = -100.0
"""A noise stem whose peak is below this has no high-energy region to blend into."""
SILENCE_LUFS_GATE = -70.0
"""BS.1770's absolute gate: a noise stem no louder than this is treated as silent."""
DC_WARNING_LEVEL = 0.01
"""A noise stem whose DC offset (mean per channel, linear) exceeds this gets a warning."""
MODEL_GENERATORS = ("riffusion", "riffusion-a2a", "outpaint-only")
"""Generators that take the model/device/dtype/local_files_only/scheduler options."""

StageHook = Callable[[str, float], None]


class _Progress:
    """Turns stage-local fractions into calls of the user's callback and keeps timings."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self.timings_s: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0
        self._moved: list[tuple[str, str, float]] = []

    @property
    def stage(self) -> str:
        """The stage now running ("" before the first)."""
        return self._stage or ""

    def start(self, stage: str) -> None:
        self._finish()
        self._stage = stage
        self._t0 = time.perf_counter()
        self(stage, 0.0)

    def __call__(self, stage: str, fraction: float) -> None:
        if self.callback is not None:
            self.callback(stage, float(min(max(fraction, 0.0), 1.0)))

    def _finish(self) -> None:
        if self._stage is not None:
            self.timings_s[self._stage] = self.timings_s.get(self._stage, 0.0) + (
                time.perf_counter() - self._t0
            )
            self(self._stage, 1.0)
            self._stage = None

    def move_time(self, source: str, target: str, seconds: float) -> None:
        """Count ``seconds`` of ``source``'s time as ``target``'s (work of one stage done
        inside another's loop), once both have their timings (``done``)."""
        self._moved.append((source, target, seconds))

    def done(self) -> dict[str, float]:
        self._finish()
        for source, target, seconds in self._moved:
            moved = min(seconds, self.timings_s.get(source, 0.0))
            self.timings_s[source] = self.timings_s.get(source, 0.0) - moved
            self.timings_s[target] = self.timings_s.get(target, 0.0) + moved
        self.timings_s["total"] = sum(v for k, v in self.timings_s.items() if k != "total")
        return self.timings_s


def model_options(request: RenderRequest) -> dict[str, Any]:
    """The options a model-owning generator (:data:`MODEL_GENERATORS`) is built with:
    the request's model, device, dtype, local_files_only and scheduler."""
    return {
        "model": request.model,
        "device": request.device,
        "dtype": request.dtype,
        "local_files_only": request.local_files_only,
        "scheduler": request.scheduler,
    }


def generator_for(request: RenderRequest) -> Generator:
    """The (process-cached) generator a request asks for."""
    from .generators import get_generator

    options = model_options(request) if request.generator in MODEL_GENERATORS else {}
    return get_generator(request.generator, **options)


def render_file(
    path: str | os.PathLike[str],
    request: RenderRequest | None = None,
    *,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Read an audio file and :func:`render` it. The result's ``source`` is the path."""
    req = request or RenderRequest()
    check_request(req)
    t0 = time.perf_counter()
    # A long stem is read straight into a scratch file (its arrays stay on disk).
    store = store_for(audio_io.probe_stem(path).duration_s)
    stem = audio_io.read_stem(path, store=store)
    return _render_stem(stem, req, progress, load_s=time.perf_counter() - t0, store=store)


def render_stem(
    stem: audio_io.Stem,
    request: RenderRequest | None = None,
    *,
    progress: ProgressFn | None = None,
    load_s: float = 0.0,
) -> RenderResult:
    """:func:`render` a stem already read by :func:`~bnmusic_bridge.audio.read_stem`
    (possibly on another machine: a Ray worker gets the audio by value, not the file).

    The result is the one :func:`render_file` gives for the stem's file: its ``source``
    is ``stem.path``. ``load_s`` (seconds) is recorded as the "load" timing.
    """
    req = request or RenderRequest()
    check_request(req)
    return _render_stem(stem, req, progress, load_s=load_s)


def render(
    noise: np.ndarray,
    sample_rate_hz: int,
    request: RenderRequest | None = None,
    *,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Blend a noise stem into generated music.

    Args:
        noise: float ``(channels, samples)`` (or ``(samples,)``), linear amplitude, 1 to 8
            channels, 8 to 192 kHz, at least 0.5 s.
        sample_rate_hz: the stem's sample rate in Hz; every output has it too.
        request: parameters (defaults: :class:`RenderRequest`).
        progress: ``progress(stage, fraction)``; raise
            :class:`~bnmusic_bridge.errors.CancelledError` from it to cancel.

    Returns:
        :class:`RenderResult` with the music (unity gain and gained), the lambda lane,
        coverage, NMR, loudness, timings and every parameter used.
    """
    req = request or RenderRequest()
    check_request(req)
    stem = audio_io.check_audio(noise, sample_rate_hz)
    return _render_stem(stem, req, progress)


@dataclass(frozen=True)
class _CheckedNoise:
    """The noise stem's level, as a DAW meters it, and what the user should know."""

    peak_dbfs: float
    lufs: float  # integrated, the stem's rate, DC removed; in the music's layout (render)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _NoiseAnalysis:
    """The noise on the analysis grid (mono, 44.1 kHz, 10 ms frames)."""

    # the arrays are numpy, or for a long stem scratch-file arrays and views of them
    # (:mod:`bnmusic_bridge.scratch`): read them by time slices
    plan: WindowPlan  # the generation windows
    padded: Any  # float (samples,): mono audio zero-padded to the windows
    mel_padded: Any  # (n_mels, frames) of ``padded``, mel orientation
    mask_padded: Any  # bool, the same shape: high-energy mask M
    mel: Any  # ``mel_padded`` cut to the stem's frames
    mask: Any  # ``mask_padded`` cut to the stem's frames
    stem: StemAnalysis  # rhythm and bands


WARM_UP_MODULES = (
    "bnmusic_bridge.spectrogram",  # torch
    "bnmusic_bridge.blend",  # masking, amplify, metering
    "bnmusic_bridge.align",
    "bnmusic_bridge.analysis",
    "scipy.ndimage",
    "scipy.signal",
    "pyloudnorm",  # through scipy.signal
    "bnmusic_bridge.generators.registry",
)
"""What every render imports, in order: :func:`warm_up` imports them up front, so the
report's ``startup`` timing holds the one-off import cost and the stage timings measure
the stages."""


def warm_up(progress: Callable[[float], None] | None = None) -> None:
    """Import the modules every render needs (:data:`WARM_UP_MODULES`: torch, scipy,
    pyloudnorm, the stages); already imported modules cost nothing. No model is loaded
    (a model generator loads its weights in the ``generate`` stage).

    Args:
        progress: called with the share of the modules imported so far (0..1).
    """
    import importlib

    for k, module in enumerate(WARM_UP_MODULES):
        importlib.import_module(module)
        if progress is not None:
            progress((k + 1) / len(WARM_UP_MODULES))


def _render_stem(
    stem: audio_io.Stem,
    req: RenderRequest,
    callback: ProgressFn | None,
    load_s: float = 0.0,
    store: ArrayStore | None = None,
) -> RenderResult:
    # Whole-stem arrays: numpy for short stems, scratch files for long ones (every stage
    # reads and writes them by time slices, so peak memory does not grow with the stem).
    store = store if store is not None else store_for(stem.duration_s)
    prog = _Progress(callback)
    prog.timings_s["load"] = load_s

    # 0. One-off imports (torch, scipy, pyloudnorm): their own timing, "startup", so the
    #    stages' timings measure the stages (a warm process pays nothing here).
    prog.start("startup")
    warm_up(lambda f: prog("startup", f))
    from . import spectrogram as spec
    from .blend import finish_blend

    # 1. Check the noise: silence, DC offset, clipping, and its loudness.
    prog.start("analyse")
    noise = _check_noise(stem)
    # The music's channels (request.channels) and the noise as it sounds in them: the
    # loudness match, the ceiling and the bus trim all compare the two in that layout.
    speakers = output_speakers(req.channels, stem)
    noise_out = _noise_in_layout(stem, len(speakers))
    if noise_out is not stem.audio:
        noise = dataclasses.replace(noise, lufs=_lufs(noise_out, stem.sample_rate_hz))
    prog("analyse", 0.1)

    # 2. Analyse it: analysis-rate mono, generation windows, mel, high-energy mask,
    #    rhythm and bands.
    analysed = _analyse_noise(stem, req, sub_progress(prog, "analyse", 0.1, 1.0), store=store)

    # 3. Stage 1, window by window: the generator makes each window's music (from the
    #    noise window, built when it is asked for), which is decoded and joined at once,
    #    so no more than a window or two of either is held at a time.
    prog.start("generate")
    windows = NoiseWindows(analysed)
    decode = _DecodeTimer(windows, req.seed)
    diagnostics: list[WindowMusic] = []
    first, music_audio = _peek(
        decode(_generate(req, windows, analysed.stem, prog, keep=diagnostics))
    )
    music_44k, join_correlations = stitch(
        analysed.plan, music_audio, channels=first.shape[0], store=store
    )
    # Decoding ran inside the generation loop, window by window (no stage of its own in
    # the progress events): its time is reported apart.
    prog.move_time("generate", "decode", decode.seconds)
    del windows

    # 5. The alignment step: the music's band energy moved toward the noise's; then the
    #    effects chain.
    prog.start("align")
    music_44k, alignment = align_music(
        music_44k,
        crop(analysed.padded, music_44k.shape[1]),
        AlignSettings.from_request(req),
        sub_progress(prog, "align", 0.0, 0.9),
        store=store,
    )
    # the analysis-rate noise audio has served (windows, alignment): let it go
    analysed = replace(analysed, padded=analysed.padded[:0])
    if req.effects:
        from .fx import apply_effects

        prog.start("effects")
        music_44k = apply_effects(music_44k, SAMPLE_RATE_HZ, req.effects, store=store)

    # 6. Stereo width (or the mono sum), then bring the music to the stem's rate, length
    #    and layout, as loud as the noise.
    music_44k = _shape_width(
        music_44k,
        len(speakers),
        req.seed,
        widen_it=req.generator != TRACK_GENERATOR,
        store=store,
    )
    music_44k, music = _match_to_stem(music_44k, stem, noise.lufs, speakers, store=store)
    prog(prog.stage, 1.0)

    # 7. Stage 2: threshold, lambda lane (objective, loudness ceiling, peak mode),
    #    coverage, NMR.
    prog.start("amplify")
    music_mel = spec.audio_to_mel(
        ChannelMean(music_44k, keepdims=False)
        if not is_whole(music_44k)
        else music_44k.mean(axis=0),
        progress=sub_progress(prog, "amplify", 0.0, 0.3),
        store=store,
    )
    # Loudness and peaks are planned in the output's channel layout (the music on its
    # speakers, the noise as that layout plays it), on the 44.1 kHz music. Masking (the
    # mel fields) is computed on the mono sums of noise and music: what masks the noise
    # wherever the listener sits between the speakers; the widening leaves it unchanged.
    # The 44.1 kHz music itself is not needed past this point.
    music_out = _in_layout(music_44k, speakers)
    planned = _plan_stage2(
        analysed,
        music_mel,
        music_out,
        noise.lufs,
        req,
        sub_progress(prog, "amplify", 0.3, 1.0),
        store=store,
    )
    del music_out, music_44k

    # 8. Apply the lane to the music on the stem's rate, channels and length, check
    #    the loudness ceiling (and the peak limit, peak_mode="lane") on that very stem
    #    (trimming if needed), and meter noise + music for the bus trim.
    prog.start("output")
    music_gained, blend = finish_blend(
        planned, music, stem.sample_rate_hz, noise=noise_out, store=store
    )

    # 9. Collect the result.
    return _collect_result(
        stem,
        req,
        noise=noise,
        analysed=analysed,
        music=music,
        music_mel=music_mel,
        music_gained=music_gained,
        blend=blend,
        music_windows=diagnostics,
        join_correlations=join_correlations,
        alignment=alignment,
        speakers=speakers,
        timings_s=prog.done(),
    )


def _check_noise(stem: audio_io.Stem) -> _CheckedNoise:
    """Refuse a silent or inaudible noise stem; measure its peak and loudness; warn of a
    DC offset and of clipped samples."""
    where = str(stem.path) if stem.path else "<audio array>"
    warnings: list[str] = []
    peak, means = audio_io.peak_and_means(stem.audio)
    peak_dbfs = 20 * np.log10(peak) if peak > 0 else float("-inf")
    if peak_dbfs < SILENCE_PEAK_DBFS:
        raise AudioInputError(
            f"{where}: the noise is silent (peak {peak_dbfs:.1f} dBFS, below "
            f"{SILENCE_PEAK_DBFS:.0f} dBFS): it has no high-energy region to blend music into"
        )
    # Loudness as a DAW meters it (the stem's own rate and layout): the music is matched
    # to it, and the ceiling is relative to it.
    # DC is inaudible but K-weighting's start-up turns a DC step into loudness: remove it.
    lufs = integrated_lufs(stem.audio, stem.sample_rate_hz, offset=means)
    dc = float(np.max(np.abs(means[:, 0])))
    if dc > DC_WARNING_LEVEL:
        warnings.append(
            f"{where}: DC offset of {dc:.3f} (linear): high-pass the stem before bouncing"
        )
    if lufs <= SILENCE_LUFS_GATE:
        raise AudioInputError(
            f"{where}: the noise is inaudible ({lufs:.1f} LUFS, at or below the "
            f"{SILENCE_LUFS_GATE:.0f} LUFS gate of ITU-R BS.1770, e.g. dither or DC only): "
            "there is nothing to blend music into"
        )
    if stem.clipped_share > 0:
        warnings.append(
            f"{where}: {stem.clipped_share * 100:.2f} % of samples are clipped (|x| >= 0.999); "
            "the analysis uses them as they are"
        )
    return _CheckedNoise(peak_dbfs=peak_dbfs, lufs=lufs, warnings=tuple(warnings))


def _analyse_noise(
    stem: audio_io.Stem,
    req: RenderRequest,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> _NoiseAnalysis:
    """The noise as analysis-rate mono cut into generation windows, its mel, its
    high-energy mask (per image window, as the paper's) and its rhythm and bands;
    ``progress(fraction)`` between the steps and per block of the mel."""
    from . import spectrogram as spec

    def step(fraction: float) -> None:
        if progress is not None:
            progress(fraction)

    mono = audio_io.to_analysis_mono(stem, store=store)
    step(0.15)
    n = mono.shape[0]
    plan = plan_windows(n, req.overlap_frames)
    if is_whole(mono):
        padded = audio_io.fit_length(mono[None, :], plan.padded_samples)[0]
    else:
        padded = ZeroPadded(mono, plan.padded_samples)
    mel_padded = spec.audio_to_mel(
        padded,
        progress=None if progress is None else lambda f: step(0.15 + 0.45 * f),
        store=store,
    )
    mask_padded = high_energy_mask(
        mel_padded,
        req.mask_area,
        window_starts=list(plan.start_frames),
        window_frames=IMAGE_FRAMES,
        valid_frames=plan.valid_frames,
        store=store,
    )
    step(0.7)
    frames = spec.num_frames(n)
    mel = crop(mel_padded, frames)
    mask = crop(mask_padded, frames)
    rhythm = analyse_stem(mono, mel, mask)
    step(1.0)
    return _NoiseAnalysis(
        plan=plan,
        padded=padded,
        mel_padded=mel_padded,
        mask_padded=mask_padded,
        mel=mel,
        mask=mask,
        stem=rhythm,
    )


class NoiseWindows(Sequence[NoiseWindow]):
    """The noise cut into Stage 1's windows, each built when it is asked for: audio,
    Riffusion image, mask and enlarged mask (picture orientation). A long stem has
    hundreds of windows; a generator that walks them in order holds one at a time."""

    def __init__(self, analysed: _NoiseAnalysis) -> None:
        self.analysed = analysed

    def __len__(self) -> int:
        return self.analysed.plan.count

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(f"window {k} of {len(self)}")
        return self._window(k % len(self))

    def __iter__(self) -> Iterator[NoiseWindow]:
        return (self._window(k) for k in range(len(self)))

    def _window(self, k: int) -> NoiseWindow:
        from .spectrogram import mel_to_image

        a, plan = self.analysed, self.analysed.plan
        f0, s0 = plan.start_frames[k], plan.start_samples[k]
        image, max_value = mel_to_image(a.mel_padded[:, f0 : f0 + IMAGE_FRAMES])
        core = a.mask_padded[:, f0 : f0 + IMAGE_FRAMES]
        return NoiseWindow(
            index=k,
            start_sample=s0,
            num_samples=WINDOW_SAMPLES,
            valid_samples=int(min(WINDOW_SAMPLES, max(0, plan.num_samples - s0))),
            audio=a.padded[s0 : s0 + WINDOW_SAMPLES],
            image=image,
            max_value=max_value,
            # Picture orientation, as the image: row 0 = highest band.
            mask=np.ascontiguousarray(core[::-1]),
            mask_enlarged=np.ascontiguousarray(enlarge_mask(core)[::-1]),
        )


def _peek(audio: Iterator[np.ndarray]) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """The first window's music and all of them again (the first fixes the joined
    music's channels); later windows must not have more channels than the first."""
    first = next(audio)

    def again() -> Iterator[np.ndarray]:
        yield first
        for k, a in enumerate(audio, 1):
            if a.shape[0] > first.shape[0]:
                raise GeneratorError(
                    f"window {k}: the generator returned {a.shape[0]} channels after "
                    f"{first.shape[0]} in window 0; every window needs the same count"
                )
            yield a

    return first, again()


class _DecodeTimer:
    """Decodes each window's music to audio as the generator yields it (and times it)."""

    def __init__(self, windows: Sequence[NoiseWindow], seed: int) -> None:
        self.windows = windows
        self.seed = seed
        self.seconds = 0.0

    def __call__(self, music: Iterable[WindowMusic]) -> Iterator[np.ndarray]:
        for k, m in enumerate(music):
            t0 = time.perf_counter()
            a = _decode_window(k, m, self.windows, self.seed)
            self.seconds += time.perf_counter() - t0
            yield a


def _decode_window(k: int, m: WindowMusic, windows: Sequence[NoiseWindow], seed: int) -> np.ndarray:
    """Window ``k``'s music as float32 ``(1 or 2, WINDOW_SAMPLES)`` audio: the generator's
    audio, checked, or its image decoded. ``windows[k]`` (the noise window, for its
    level) is only asked for when the generator gave no level of its own: a lazy
    :class:`NoiseWindows` builds it again."""
    from .spectrogram import image_to_audio

    if m.audio is not None:
        a = np.asarray(m.audio, dtype=np.float32)
        if a.ndim == 1:
            a = a[None, :]
        if a.shape[1] != WINDOW_SAMPLES or a.shape[0] not in (1, 2):
            raise GeneratorError(
                f"window {k}: generator audio has shape {a.shape}; expected "
                f"(1 or 2, {WINDOW_SAMPLES})"
            )
    elif m.image is not None:
        # The noise window's max_value keeps the music's level in step with the
        # noise from window to window (the image alone has no absolute scale); a
        # generator that re-expressed the window at another level gives its own.
        level = windows[k].max_value if m.max_value is None else m.max_value
        a = image_to_audio(m.image, level, num_samples=WINDOW_SAMPLES, seed=seed + k)[None, :]
    else:
        raise GeneratorError(f"window {k}: the generator returned neither audio nor image")
    if not np.all(np.isfinite(a)):
        raise GeneratorError(f"window {k}: the generator returned NaN or inf samples")
    return a


def _window_audio(
    music: Sequence[WindowMusic], windows: Sequence[NoiseWindow], seed: int, prog: StageHook
) -> list[np.ndarray]:
    """Every window's music as audio (:func:`_decode_window`), in order."""
    if len(music) != len(windows):
        raise ValueError(f"{len(music)} music windows for {len(windows)} noise windows")
    out = []
    for k, m in enumerate(music):
        out.append(_decode_window(k, m, windows, seed))
        prog("decode", (k + 1) / len(music))
    return out


def _generate(
    req: RenderRequest,
    windows: Sequence[NoiseWindow],
    analysis: StemAnalysis,
    prog: StageHook,
    *,
    keep: list[WindowMusic] | None = None,
) -> Iterator[WindowMusic]:
    """Stage 1: the request's generator turns every noise window into music, yielded in
    order (one at a time from a streaming generator). ``keep`` collects each window's
    diagnostics (without its audio or image)."""
    from .generators.base import iter_music

    generator = generator_for(req)
    settings = GenerationSettings.from_request(req)
    count = 0
    for count, m in enumerate(iter_music(generator, windows, analysis, settings, prog), 1):
        if count > len(windows):
            raise GeneratorError(
                f"generator {req.generator!r} returned more than {len(windows)} windows"
            )
        if keep is not None:
            keep.append(WindowMusic(diagnostics=m.diagnostics))
        yield m
    if count < len(windows):
        raise GeneratorError(
            f"generator {req.generator!r} returned {count} windows for {len(windows)}"
        )


def output_speakers(channels: str, stem: audio_io.Stem) -> tuple[str, ...]:
    """The music stem's speakers for ``request.channels`` (:data:`~.request.CHANNEL_MODES`):
    ``("FC",)`` for mono music, ``("FL", "FR")`` for stereo music from a mono or stereo
    stem, and the stem's own layout (its WAV channel mask, else the usual layout for its
    channel count) for a multichannel stem, or for a mono stem with ``"match"``."""
    if channels == "mono":
        return ("FC",)
    if stem.num_channels <= 2 and not (channels == "match" and stem.num_channels == 1):
        return ("FL", "FR")
    return stem_speakers(stem.num_channels, stem.channel_mask)


def _noise_in_layout(stem: audio_io.Stem, num_channels: int) -> np.ndarray | BlockArray:
    """The noise as the music's layout plays it: the stem itself when the channel counts
    agree; its mono sum for mono music; a mono stem on both channels of stereo music
    (a mono item on a stereo track at a 0 dB pan law)."""
    if num_channels == stem.num_channels:
        return stem.audio
    if num_channels == 1:
        if not is_whole(stem.audio):
            return ChannelMean(stem.audio)
        return stem.audio.mean(axis=0, keepdims=True)
    if not is_whole(stem.audio):
        return Mapped(
            stem.audio,
            lambda p: np.repeat(p.mean(axis=0, keepdims=True), num_channels, axis=0),
            num_channels,
        )
    return np.repeat(stem.audio.mean(axis=0, keepdims=True), num_channels, axis=0)


def _lufs(audio: np.ndarray | BlockArray, sample_rate_hz: int) -> float:
    # As _check_noise measures it: DC removed (K-weighting turns a DC step into loudness),
    # block by block (``audio - offset`` in the audio's dtype, as a whole copy would be).
    return integrated_lufs(audio, sample_rate_hz, offset=audio_io.channel_means(audio))


def _shape_width(
    music_44k: Any,
    num_channels: int,
    seed: int,
    *,
    widen_it: bool = True,
    store: ArrayStore | None = None,
) -> Any:
    """Mono music: the mono sum. Otherwise stereo at least as wide as real stereo music
    (:func:`bnmusic_bridge.stereo.widen`: the mono sum stays exactly as it was, so
    Stage 2, computed on the mono sums of noise and music, does not change).
    ``widen_it`` False (the producer's own track): stereo as it is, mono on both sides.
    A long stem's music (a scratch-file array) comes back as a new one of ``store``."""
    if not is_whole(music_44k):
        assert store is not None
        if num_channels == 1:
            return copy_into(store, ChannelMean(music_44k))
        if not widen_it:
            if music_44k.shape[0] == 2:
                return music_44k
            return copy_into(store, Mapped(music_44k, lambda p: audio_io.match_channels(p, 2), 2))
    if num_channels == 1:
        return music_44k.mean(axis=0, keepdims=True).astype(np.float32)
    if not widen_it:
        return audio_io.match_channels(music_44k, 2)
    from .stereo import widen

    return widen(music_44k, SAMPLE_RATE_HZ, seed=seed, store=store)


def _in_layout(music: Any, speakers: tuple[str, ...]) -> Any:
    """1- or 2-channel music on the output's speakers (music on the front pair); a
    view, slice by slice, of a scratch-file array."""
    if not is_whole(music):
        if len(speakers) == music.shape[0]:
            return music
        return Mapped(music, lambda p: _in_layout(p, speakers), len(speakers))
    if len(speakers) <= 2:
        return audio_io.match_channels(music, len(speakers))
    return place_music(music, speakers)


def _match_to_stem(
    music_44k: Any,
    stem: audio_io.Stem,
    noise_lufs: float,
    speakers: tuple[str, ...],
    *,
    store: ArrayStore | None = None,
) -> tuple[Any, Any]:
    """The music on the stem's rate and length and the output's speakers, and both it
    and the 44.1 kHz music scaled to unity: as loud as the noise (its integrated LUFS
    in the same layout)."""
    if not is_whole(music_44k):
        assert store is not None
        return _match_to_stem_blocks(music_44k, stem, noise_lufs, speakers, store)
    music = _in_layout(
        audio_io.resample(music_44k, SAMPLE_RATE_HZ, stem.sample_rate_hz, stem.num_samples),
        speakers,
    )
    if np.any(music):
        unity = np.float32(
            10.0 ** ((noise_lufs - integrated_lufs(music, stem.sample_rate_hz)) / 20.0)
        )
        # ``music`` may share memory with ``music_44k`` (same rate and layout): scale it
        # into a new array first, then the 44.1 kHz music in place (no third copy)
        music = music * unity
        music_44k *= unity
    return music_44k, music


def _match_to_stem_blocks(
    music_44k: Any,
    stem: audio_io.Stem,
    noise_lufs: float,
    speakers: tuple[str, ...],
    store: ArrayStore,
) -> tuple[Any, Any]:
    """:func:`_match_to_stem` for scratch-file arrays: the same numbers, a block at a time
    (the unity gain needs the whole music's loudness first: two passes)."""
    if stem.sample_rate_hz == SAMPLE_RATE_HZ and stem.num_samples == music_44k.shape[1]:
        at_rate = music_44k
    else:
        at_rate = audio_io.resample(
            music_44k, SAMPLE_RATE_HZ, stem.sample_rate_hz, stem.num_samples, store=store
        )
    laid = _in_layout(at_rate, speakers)
    n = laid.shape[1]
    silent = not any(np.any(laid[:, a:b]) for a, b in blocks(n))
    unity = (
        np.float32(1.0)
        if silent
        else np.float32(10.0 ** ((noise_lufs - integrated_lufs(laid, stem.sample_rate_hz)) / 20.0))
    )
    music = store.empty((len(speakers), n), np.float32)
    for a, b in blocks(n):
        part = laid[:, a:b]
        music[:, a:b] = part if silent else part * unity
    if not silent:
        for a, b in blocks(music_44k.shape[1]):
            part = music_44k[:, a:b]
            part *= unity
            music_44k[:, a:b] = part
    return music_44k, music


def _plan_stage2(
    analysed: _NoiseAnalysis,
    music_mel: Any,
    music_out: Any,
    noise_lufs: float,
    req: RenderRequest,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> Blend:
    """Stage 2 planned on the 44.1 kHz music in the output's channel layout
    (``music_out``): masking field, caps, lambda lane, metering."""
    from .blend import BlendSettings, plan_blend

    return plan_blend(
        analysed.mel,
        music_mel,
        analysed.mask,
        music_out,
        noise_lufs,
        BlendSettings.from_request(req),
        progress=progress,
        store=store,
    )


def _generator_warnings(music_windows: Sequence[WindowMusic]) -> tuple[str, ...]:
    """Warnings the generator put in its windows' diagnostics, each once, in order."""
    seen: dict[str, None] = {}
    for m in music_windows:
        for w in m.diagnostics.get("warnings", ()) or ():
            seen.setdefault(str(w), None)
    return tuple(seen)


def _collect_result(
    stem: audio_io.Stem,
    req: RenderRequest,
    *,
    noise: _CheckedNoise,
    analysed: _NoiseAnalysis,
    music: Any,
    music_mel: Any,
    music_gained: Any,
    blend: Blend,
    music_windows: Sequence[WindowMusic],
    join_correlations: Sequence[float],
    alignment: AlignmentSummary,
    speakers: tuple[str, ...],
    timings_s: dict[str, float],
) -> RenderResult:
    lane = blend.lane
    rendered = blend.rendered
    assert rendered is not None  # finish_blend measured the rendered stem
    return RenderResult(
        sample_rate_hz=stem.sample_rate_hz,
        num_samples=stem.num_samples,
        music=music.astype(np.float32, copy=False) if is_whole(music) else music,
        music_gained=music_gained,
        lane_times_s=np.asarray(lane.frame_times_s, dtype=np.float64),
        lane_gain_db=np.asarray(lane.frame_gain_db, dtype=np.float64),
        window_times_s=np.asarray(lane.window_times_s, dtype=np.float64),
        window_gain_db=np.asarray(lane.window_gain_db, dtype=np.float64),
        coverage=blend.coverage,
        coverage_per_frame=blend.coverage_per_frame,
        frame_rate_hz=FRAME_RATE_HZ,
        nmr_db=blend.nmr_db,
        nmr_per_frame_db=blend.nmr_per_frame_db,
        noise_lufs=noise.lufs,
        # Both loudnesses as the DAW will meter them: the stems' own rate, the music's
        # layout (the noise as that layout plays it).
        music_lufs=float(rendered.music_lufs_output),
        timings_s=timings_s,
        request=req,
        generator_diagnostics=[dict(m.diagnostics) for m in music_windows],
        warnings=noise.warnings + _generator_warnings(music_windows) + blend.warnings,
        analysis=AnalysisArrays(noise_mel=analysed.mel, music_mel=music_mel, mask=analysed.mask),
        source=stem.path,
        details=RenderDetails(
            generation_windows=analysed.plan.count,
            join_correlations=tuple(join_correlations),
            tempo_bpm=analysed.stem.tempo_bpm,
            noise_peak_dbfs=noise.peak_dbfs,
            noise_clipped_share=stem.clipped_share,
            blend=blend.summary(),
            shortfalls=blend.shortfalls,
            alignment=alignment,
            speakers=speakers,
        ),
    )
