"""The live engine: noise blocks in, music blocks of the same size out, in real time.

Two sides share preallocated rings (:mod:`.ring`) and never wait on each other:

- the **audio callback** (:meth:`LiveEngine.process`, called by JACK, PortAudio or a
  test loop for every block of 64 to 4,096 frames) copies the noise block into the
  noise ring, copies the music for the block out of the music ring, applies the gain
  lane as a per-block linear ramp, crossfades to a held texture when the music ring
  runs low, and counts what happened. It only copies into and multiplies preallocated
  arrays: no numpy allocation, no lock, no wait (Python itself still makes small
  objects for the integers and floats it computes; see docs/live.md);
- the **worker** (:class:`LiveWorker`, a thread, or stepped by hand with
  :meth:`LiveEngine.step` for an offline run) drains the noise, keeps its mel history,
  analyses a sliding history (tempo, beat phase, key, high-energy bands) with
  hysteresis, composes with the procedural generator ahead of the play head and solves
  Stage 2 on the most recent noise window.

Timeline: every position is an absolute sample index of the stream (the callback's
frame count since :meth:`LiveEngine.start`); noise sample ``p`` and music sample ``p``
pass the callback in the same block. The generator's timeline starts at ``origin``
(chosen when the first plan is made, after ``warm_up_s`` of noise): renderer sample ``s``
plays at stream sample ``origin + s``; each plan's beat phase is moved onto that timeline.

Stage 2 live: every ``lane_hop_s`` the worker solves the request's objective (coverage
or the paper's loss, threshold model, smr) on the last ``lane_window_s`` of noise mel
(ending :data:`MEL_CONTEXT_S` before the newest noise sample) against the music that is
about to play, clamps to ``[min_gain_db, max_gain_db]``, caps by the loudness ceiling
and a -1 dBFS peak limit, then extends the lane up to ``lane_lead_s`` ahead of the play
head with a causal one-pole smoother (time constant ``smoothing_s / 2``) and the slew
limit. The lane is in dB relative to the music loudness-matched to the noise (as a
render's lambda), the matching itself over the last :data:`UNITY_HISTORY_S`.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..analysis import StemAnalysis, analyse_stem
from ..errors import ParameterError
from ..grid import HOP_SAMPLES, N_MELS, SAMPLE_RATE_HZ
from ..loudness import integrated_lufs
from ..request import RenderRequest, check_request
from .ring import SampleRing

MIN_BLOCK = 64
MAX_BLOCK = 4_096
"""Block sizes (frames) the engine accepts: what sound cards and JACK periods use."""
XFADE_SAMPLES = 4_096
"""Length of the crossfade to and from the held texture, samples (93 ms at 44.1 kHz);
also the music the callback keeps in reserve: it leaves the live music when less than
one block plus this is buffered, so the fade always has music to fade out."""
RESUME_MARGIN_S = 0.5
"""The callback goes back from the texture to the music once this much more than the
reserve is buffered again (so it does not flutter between the two)."""
MEL_CONTEXT_FRAMES = 20
"""Frames of audio context each side of a mel frame (the 17,640-sample FFT's half)."""
MEL_CONTEXT_S = MEL_CONTEXT_FRAMES * HOP_SAMPLES / SAMPLE_RATE_HZ
"""How far the newest mel frame lags the newest noise sample, s (0.2 s)."""
MEL_BATCH_FRAMES = 32
"""Noise mel frames are computed in batches of this many (each call pays 40 frames of
context; 0.32 s)."""
UNITY_HISTORY_S = 30.0
"""The music is loudness-matched to the noise's loudness over this much history, s (a
render matches it to the whole stem's integrated loudness)."""
TEMPO_TOLERANCE = 0.04
"""Tempos closer than this ratio (4 %) count as the same."""
PHASE_TOLERANCE_BEATS = 0.15
"""Beat phases closer than this share of a beat count as the same."""
REGISTER_TOLERANCE_ST = 4.0
"""Chord registers (from the high-energy bands) closer than this, semitones, count as the same."""
WORKER_SLACK_S = 0.75
"""Time allowed for a Stage 2 solve and a worker the machine slows, s (lane latency)."""
PEAK_CEILING_DBFS = -1.0
"""The lane keeps the music's sample peak at or under this, dBFS (live has no bus trim)."""
_LANE_RING_FRAMES = 8_192
_MEL_HISTORY_S = 40.0


@dataclass(frozen=True)
class LiveSettings:
    """How the live engine runs (the music and Stage 2 come from the request).

    Attributes:
        sample_rate_hz: the stream's rate, Hz. The worker analyses and generates at
            44,100 Hz; at any other rate it resamples the noise it drains and the music
            it writes (soxr, streaming), never in the callback.
        max_block: largest block :meth:`LiveEngine.process` is given, frames (64..4096).
        input_channels: noise channels per block (mixed to mono for the analysis).
        output_channels: output channels (music stereo: 1 = mono mix, 2 = L/R, more =
            L/R repeated).
        monitor: add the noise to the outputs (music plus noise monitor).
        ahead_s: music the worker keeps generated ahead of the play head, s (at least
            ``lane_window_s``; the generator renders 1.49 s chunks, so the buffer holds
            between this and 1.49 s more).
        warm_up_s: noise listened to before the first plan and the music start, s.
        history_s: noise history each analysis looks at, s.
        analysis_hop_s: time between analyses, s.
        hysteresis_s: a new tempo, beat phase, key or register takes over only after
            every analysis for this long agreed on it, s.
        lane_lead_s: how far ahead of the play head the lane is written, s (its last
            value is held when the worker is late).
        start_lead_s: the music starts this long after the first plan is made, s.
        record: keep the noise, the played music and the lane (see
            :meth:`LiveEngine.recording`).
    """

    sample_rate_hz: int = SAMPLE_RATE_HZ
    max_block: int = MAX_BLOCK
    input_channels: int = 1
    output_channels: int = 2
    monitor: bool = False
    ahead_s: float = 3.0
    warm_up_s: float = 4.0
    history_s: float = 12.0
    analysis_hop_s: float = 2.56
    hysteresis_s: float = 7.68
    lane_lead_s: float = 0.75
    start_lead_s: float = 0.5
    record: bool = False

    def __post_init__(self) -> None:
        if not 8_000 <= self.sample_rate_hz <= 192_000:
            raise ParameterError(
                f"sample_rate_hz={self.sample_rate_hz} is out of range 8000..192000 Hz"
            )
        if not MIN_BLOCK <= self.max_block <= MAX_BLOCK:
            raise ParameterError(
                f"max_block must be {MIN_BLOCK}..{MAX_BLOCK} frames, got {self.max_block}"
            )
        if not 1 <= self.input_channels <= 8 or not 1 <= self.output_channels <= 8:
            raise ParameterError(
                f"input_channels and output_channels must be 1..8, got {self.input_channels}, "
                f"{self.output_channels}"
            )
        for name in (
            "ahead_s",
            "warm_up_s",
            "history_s",
            "analysis_hop_s",
            "lane_lead_s",
            "start_lead_s",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ParameterError(f"{name} must be a positive number of seconds, got {v!r}")
        if self.hysteresis_s < 0:
            raise ParameterError(f"hysteresis_s must be >= 0, got {self.hysteresis_s}")
        if self.warm_up_s < 1.0 or self.history_s < self.warm_up_s:
            raise ParameterError(
                f"need warm_up_s >= 1 s and history_s >= warm_up_s, got {self.warm_up_s}, {self.history_s}"
            )


def lane_latency_s(request: RenderRequest, settings: LiveSettings) -> float:
    """The stated reaction time of the lane, s: from a step in the noise level until
    the applied gain has moved half of the step's dB.

    The sum of: the wait for the next solve (``lane_hop_s``), the mel's right context
    (:data:`MEL_CONTEXT_S`) and its batch (:data:`MEL_BATCH_FRAMES`), the frames a block
    may still read (``max_block``), the one-pole's half-time (``smoothing_s / 2 * ln 2``,
    or the slew limit's time for half of a 10 dB step if slower), and
    :data:`WORKER_SLACK_S` for the solve and a worker slowed by a loaded machine. (The
    lane written ahead, ``lane_lead_s``, is rewritten after each solve: it adds nothing.)
    Defaults: 3.33 s.
    """
    tau = request.smoothing_s / 2.0
    half = tau * math.log(2.0)
    if request.max_slew_db_per_s:
        half = max(half, 5.0 / request.max_slew_db_per_s)
    batch_s = MEL_BATCH_FRAMES * HOP_SAMPLES / SAMPLE_RATE_HZ
    block_s = settings.max_block / settings.sample_rate_hz
    return request.lane_hop_s + MEL_CONTEXT_S + batch_s + block_s + half + WORKER_SLACK_S


@dataclass(frozen=True)
class MeterPoint:
    """One Stage 2 solve as the meter reports it.

    Attributes:
        time_s: stream time of the solved noise window's end, s.
        coverage: share (0..1) of the window's high-energy bins masked at the applied gain.
        lambda_db: the lane (relative to the loudness-matched music) where it was written, dB.
        target_db: the window's clamped and capped objective gain, dB.
        noise_lufs: the noise's loudness over the window, LUFS.
        music_lufs: the gained music's loudness (the matched level plus lambda), LUFS.
    """

    time_s: float
    coverage: float
    lambda_db: float
    target_db: float
    noise_lufs: float
    music_lufs: float


@dataclass
class LiveStats:
    """Counters of a live run (callback side and worker side).

    Attributes:
        blocks: blocks processed by the callback.
        frames: frames processed.
        late_blocks: blocks whose callback CPU time exceeded the block's duration (the
            project's own lateness; xruns from the server or the machine are not here).
        max_callback_s: longest callback CPU time, s (``time.thread_time``).
        total_callback_s: summed callback CPU time, s.
        underruns: times the callback left the live music for the held texture because
            the worker had not generated enough.
        underrun_frames: frames played from the texture (or silence) after the music began.
        lane_late_blocks: blocks where the lane was not written that far (last value held).
        noise_overruns: times the worker lost noise because it fell a whole ring behind.
        worker_cpu_s: the worker thread's CPU time, s.
        plan_switches: plans taken over after the first (tempo/phase/key/register change).
        analyses: analyses run.
        solves: Stage 2 solves run.
        tempo_bpm, key, style: the current plan's (None before the music starts).
        music_start_s: stream time the music began, s (None before).
        plans: each plan taken (from_s, tempo_bpm, tempo_source, key, style).
        late_at_s: stream times of the first 64 late blocks, s (after :meth:`LiveEngine.stop`).
    """

    blocks: int = 0
    frames: int = 0
    late_blocks: int = 0
    max_callback_s: float = 0.0
    total_callback_s: float = 0.0
    underruns: int = 0
    underrun_frames: int = 0
    lane_late_blocks: int = 0
    noise_overruns: int = 0
    worker_cpu_s: float = 0.0
    plan_switches: int = 0
    analyses: int = 0
    solves: int = 0
    tempo_bpm: float | None = None
    key: str | None = None
    style: str | None = None
    music_start_s: float | None = None
    plans: list[dict[str, Any]] = field(default_factory=list)

    late_at_s: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class LiveRecording:
    """What a run with ``record=True`` heard and played.

    Attributes:
        sample_rate_hz: the stream's rate.
        noise: float32 ``(samples,)`` the noise (mono mix of the inputs).
        music: float32 ``(2, samples)`` the music as played (lane, texture and fades
            applied; without the monitor).
        lane_times_s: float64 ``(frames,)`` stream time of each 10 ms lane frame, s.
        lane_db: float64 ``(frames,)`` lambda, dB relative to the loudness-matched music.
        gain_db: float64 ``(frames,)`` the gain applied to the generator's output, dB.
        meter: every Stage 2 solve.
        stats: the run's counters.
    """

    sample_rate_hz: int
    noise: np.ndarray
    music: np.ndarray
    lane_times_s: np.ndarray
    lane_db: np.ndarray
    gain_db: np.ndarray
    meter: tuple[MeterPoint, ...]
    stats: LiveStats


class LiveEngine:
    """A live BNMusic stream (see the module doc).

    Args:
        request: the render request (the same fields and presets as ``render``); its
            generator must be ``procedural`` (the only one fast enough to run live).
        settings: stream controls.
        on_meter: called from the worker after every Stage 2 solve (keep it quick).
    """

    def __init__(
        self,
        request: RenderRequest | None = None,
        settings: LiveSettings | None = None,
        on_meter: Callable[[MeterPoint], None] | None = None,
    ) -> None:
        req = request or RenderRequest()
        check_request(req)
        if req.generator != "procedural":
            raise ParameterError(
                f"generator={req.generator!r}: live runs the procedural generator only "
                "(the others are far slower than real time on a CPU)"
            )
        s = settings or LiveSettings()
        if s.ahead_s < req.lane_window_s:
            raise ParameterError(
                f"ahead_s={s.ahead_s} must be at least lane_window_s={req.lane_window_s}"
            )
        self.request = req
        self.settings = s
        self.on_meter = on_meter
        sr = s.sample_rate_hz
        from ..generators.procedural import CHUNK_SAMPLES

        self.noise_ring = SampleRing(1, int((_MEL_HISTORY_S / 4) * sr))
        self.music_ring = SampleRing(2, int((s.ahead_s + 3 * CHUNK_SAMPLES / SAMPLE_RATE_HZ) * sr))
        self.out_ring = SampleRing(2, int(10.0 * sr)) if s.record else None
        self.lane_gain = np.zeros(_LANE_RING_FRAMES)  # linear, per 10 ms frame
        self.lane_write_frame = 0
        self.texture: np.ndarray | None = None  # float32 (2, loop) once the first plan exists
        self.stats = LiveStats()
        self.pos = 0  # the callback's stream position, samples
        # callback scratch, preallocated
        n = s.max_block
        self._mono = np.zeros(n, dtype=np.float32)
        self._music = np.zeros((2, n), dtype=np.float32)
        self._tex = np.zeros((2, n), dtype=np.float32)
        self._tmp = np.zeros((2, n), dtype=np.float32)
        self._w = np.zeros(n, dtype=np.float32)
        self._ramps: dict[
            int, np.ndarray
        ] = {}  # block size -> (k + 1) / n ramp, filled outside the callback
        self._mix = 0.0  # weight of the live music (1) vs the fallback (0)
        self._on_music = False
        self._gain_prev = 0.0
        self._late_at = np.zeros(64)  # stream times of the first late blocks, s
        self._tex_pos = 0
        self._started_music = False
        self._texture_live = False
        self.worker = LiveWorker(self)
        self._thread: threading.Thread | None = None
        self._gc_was_enabled = True
        self._stop = threading.Event()
        self.error: BaseException | None = None
        for size in (64, 128, 256, 512, 1024, 2048, 4096):
            if size <= n:
                self.ramp_for(size)

    # -- the audio callback ---------------------------------------------------------

    def ramp_for(self, n: int) -> np.ndarray:
        """The ``(k + 1) / n`` ramp for blocks of ``n`` frames (made once per size;
        call it before the stream starts for sizes other than powers of two)."""
        r = self._ramps.get(n)
        if r is None:
            r = (np.arange(1, n + 1, dtype=np.float32) / np.float32(n)).astype(np.float32)
            self._ramps[n] = r
        return r

    def process(self, noise: np.ndarray, out: np.ndarray) -> None:
        """The audio callback: one block of noise in, the same number of music frames out.

        Args:
            noise: float32 ``(frames,)`` (one input) or ``(input_channels, frames)``.
            out: float32 ``(output_channels, frames)`` written in place.
        """
        t0 = time.thread_time()
        n = noise.shape[-1]
        s = self.settings
        pos = self.pos
        mono = self._mono[:n]
        if noise.ndim == 1:
            mono[:] = noise
        else:
            np.sum(noise, axis=0, out=mono)
            if noise.shape[0] > 1:
                mono *= np.float32(1.0 / noise.shape[0])
        self.noise_ring.write_from(mono)

        ring = self.music_ring
        music = self._music[:, :n]
        ring.read_into(music, pos, n)  # zeros where nothing valid is buffered
        ahead = ring.write_pos - pos if pos >= ring.valid_from else 0
        if self._on_music:
            if ahead < n + XFADE_SAMPLES:
                self._on_music = False
                self.stats.underruns += 1
        elif ahead >= n + XFADE_SAMPLES + (
            RESUME_MARGIN_S * s.sample_rate_hz if self._started_music else 0
        ):
            self._on_music = True
            if not self._started_music:
                self._started_music = True
                self.stats.music_start_s = pos / s.sample_rate_hz
        ramp = self._ramps.get(n)
        if ramp is None:
            ramp = self.ramp_for(n)  # a new block size: allocated once, then reused
        m0 = self._mix
        step = n / XFADE_SAMPLES
        m1 = min(1.0, m0 + step) if self._on_music else max(0.0, m0 - step)
        w = self._w[:n]
        if m0 != 1.0 or m1 != 1.0:
            tex = self._tex[:, :n]
            if self._texture_live:
                self._texture_into(tex, n)
            else:
                tex[:] = 0.0  # before the music first faded in: fade from silence
            np.multiply(ramp, np.float32(m1 - m0), out=w)
            w += np.float32(m0)
            music *= w
            tmp = self._tmp[:, :n]
            np.multiply(tex, w, out=tmp)
            tex -= tmp
            music += tex
        else:
            self._tex_pos = (
                (self._tex_pos + n) % self.texture.shape[1] if self.texture is not None else 0
            )
        self._mix = m1
        if m1 == 1.0:
            self._texture_live = True
        if self._started_music and not self._on_music:
            self.stats.underrun_frames += n

        g1 = self._lane_at(pos + n)
        g0 = self._gain_prev
        np.multiply(ramp, np.float32(g1 - g0), out=w)
        w += np.float32(g0)
        music *= w
        self._gain_prev = g1

        if self.out_ring is not None:
            self.out_ring.write_from(music)
        oc = out.shape[0]
        if oc == 1:
            np.add(music[0], music[1], out=out[0])
            out[0] *= np.float32(0.5)
        else:
            for c in range(oc):
                out[c] = music[c % 2]
        if s.monitor:
            out += mono
        np.clip(out, -1.0, 1.0, out=out)  # a last guard: the DAC would wrap or clip anyway
        ring.read_pos = pos + n
        self.pos = pos + n
        st = self.stats
        st.blocks += 1
        st.frames += n
        dt = time.thread_time() - t0
        st.total_callback_s += dt
        if dt > st.max_callback_s:
            st.max_callback_s = dt
        if dt > n / s.sample_rate_hz:
            if st.late_blocks < len(self._late_at):
                self._late_at[st.late_blocks] = pos / s.sample_rate_hz
            st.late_blocks += 1

    def _texture_into(self, tex: np.ndarray, n: int) -> None:
        loop = self.texture
        if loop is None:
            tex[:] = 0.0
            return
        size = loop.shape[1]
        p = self._tex_pos
        done = 0
        while done < n:
            k = min(n - done, size - p)
            tex[:, done : done + k] = loop[:, p : p + k]
            done += k
            p = (p + k) % size
        self._tex_pos = p

    def _lane_at(self, sample: int) -> float:
        wf = self.lane_write_frame
        if wf == 0:
            return 0.0
        rate = self.settings.sample_rate_hz
        f = sample * 100 // rate  # the lane's 10 ms frames
        cap = _LANE_RING_FRAMES
        lane = self.lane_gain
        if f + 1 < wf and f >= wf - cap + 1:
            frac = (sample * 100 - f * rate) / rate
            a = lane[f % cap]
            return float(a + (lane[(f + 1) % cap] - a) * frac)
        if f + 1 >= wf and self._started_music:
            self.stats.lane_late_blocks += 1
        return float(lane[(wf - 1) % cap])

    # -- running ---------------------------------------------------------------------

    def start(self, threaded: bool = True) -> None:
        """Start the worker thread (``threaded``) or leave the worker to :meth:`step`."""
        if threaded and self._thread is None:
            # Python's cyclic GC runs in whichever thread allocates when its counters
            # trip: that can be the audio callback. Freeze what exists (full collections
            # then skip it), switch automatic collection off, and let the worker collect
            # the young generations between its jobs; stop() restores the GC.
            self._gc_was_enabled = gc.isenabled()
            gc.collect()
            gc.freeze()
            gc.disable()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run_worker, name="bnmusic-live-worker", daemon=True
            )
            self._thread.start()

    def step(self) -> bool:
        """Run the worker's due work once (offline or tests); True if it did something."""
        return self.worker.step()

    def _run_worker(self) -> None:
        t0 = time.thread_time()
        next_gc, n_gc = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_gc:
                    # the young generations each second, everything since start each
                    # minute (what existed at start is frozen): here, not in the callback
                    full = n_gc % 60 == 59
                    gc.collect(2 if full else 1)
                    n_gc += 1
                    next_gc = time.monotonic() + 1.0
                if not self.worker.step():
                    time.sleep(0.005)  # polling: the callback never signals (no lock there)
                self.stats.worker_cpu_s = time.thread_time() - t0
        except BaseException as e:  # noqa: BLE001 - reported by stop() and the front end
            self.error = e
        finally:
            self.stats.worker_cpu_s = time.thread_time() - t0

    def stop(self) -> LiveStats:
        """Stop the worker thread (if any); drain what it still holds; return the counters."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10.0)
            self._thread = None
            gc.unfreeze()
            if self._gc_was_enabled:
                gc.enable()
        self.worker.drain_record()
        self.stats.late_at_s = [round(float(t), 3) for t in self._late_at[: self.stats.late_blocks]]
        return self.stats

    def recording(self) -> LiveRecording:
        """The noise, played music and lane of a ``record=True`` run (after :meth:`stop`)."""
        if not self.settings.record:
            raise ParameterError("the engine was not started with record=True")
        return self.worker.recording()


def _mel_frames(audio_at: Callable[[int, int], np.ndarray], f0: int, f1: int) -> np.ndarray:
    """Mel frames ``[f0, f1)`` of a stream (frame ``j`` centred on sample ``j * 441``),
    exactly as a whole-signal STFT gives them away from its ends: computed on the
    samples with :data:`MEL_CONTEXT_FRAMES` of context each side."""
    from ..spectrogram import audio_to_mel

    c = MEL_CONTEXT_FRAMES
    a = (f0 - c) * HOP_SAMPLES
    b = (f1 - 1 + c) * HOP_SAMPLES + 1
    mel = audio_to_mel(audio_at(a, b))
    return mel[:, c : c + (f1 - f0)]


class _History:
    """A worker-side ring of mono samples (or mel frames) at absolute positions."""

    def __init__(self, rows: int, capacity: int) -> None:
        self.data = np.zeros((rows, capacity), dtype=np.float32)
        self.capacity = capacity
        self.end = 0  # one past the newest column

    def append(self, block: np.ndarray) -> None:
        n = block.shape[1]
        if n >= self.capacity:
            block = block[:, -self.capacity :]
            self.end += n - self.capacity
            n = self.capacity
        s = self.end % self.capacity
        k = min(n, self.capacity - s)
        self.data[:, s : s + k] = block[:, :k]
        self.data[:, : n - k] = block[:, k:]
        self.end += n

    def put_at(self, pos: int, block: np.ndarray) -> None:
        """Write at absolute ``pos`` (zeros fill a gap before it)."""
        if pos > self.end:
            self.append(np.zeros((self.data.shape[0], pos - self.end), dtype=np.float32))
        elif pos < self.end:
            block = block[:, self.end - pos :]
        if block.shape[1]:
            self.append(block)

    def get(self, a: int, b: int) -> np.ndarray:
        """Columns ``[a, b)`` as a new array; zeros outside what is held."""
        out = np.zeros((self.data.shape[0], b - a), dtype=np.float32)
        lo, hi = max(a, self.end - self.capacity, 0), min(b, self.end)
        for p in range(lo, hi, self.capacity):
            q = min(hi, p + self.capacity)
            s = p % self.capacity
            k = min(q - p, self.capacity - s)
            out[:, p - a : p - a + k] = self.data[:, s : s + k]
            if k < q - p:
                out[:, p - a + k : q - a] = self.data[:, : q - p - k]
        return out


class LiveWorker:
    """The engine's worker: analysis with hysteresis, generation ahead, Stage 2."""

    def __init__(self, engine: LiveEngine) -> None:
        from ..amplify import LaneSettings
        from ..generators.base import GenerationSettings
        from ..generators.procedural import CHUNK_SAMPLES, parse_options

        self.e = engine
        req, s = engine.request, engine.settings
        self.sr = SAMPLE_RATE_HZ  # the worker's own rate: analysis and generation
        self.rate = s.sample_rate_hz  # the stream's
        self.ratio = self.rate / self.sr
        self.noise_rs: Any = None
        self.music_rs: Any = None
        if self.rate != self.sr:
            import soxr

            self.noise_rs = soxr.ResampleStream(self.rate, self.sr, 1, dtype="float32")
        self.noise_in = 0  # noise samples in the history (the worker's rate)
        self.music_written = 0  # end of the generated music (the worker's rate)
        self.chunk = CHUNK_SAMPLES
        self.gen_settings = GenerationSettings.from_request(req)
        self.options = parse_options(req.generator_params)
        self.lane_settings = LaneSettings.from_request(req)
        mel_cap = int(_MEL_HISTORY_S * self.sr / HOP_SAMPLES)
        self.noise = _History(1, int((s.history_s + 4.0) * self.sr))
        self.noise_mel = _History(N_MELS, mel_cap)
        self.music_mel = _History(N_MELS, mel_cap)
        self.music_mono = _History(1, int((s.ahead_s + 8.0) * self.sr))
        self.noise_pos = 0
        self.noise_mel_done = 0
        self.music_mel_done = 0
        self.next_analysis = int(s.warm_up_s * self.sr)
        self.plan: Any = None
        self.renderer: Any = None
        self.fade_from: Any = None
        self.pending: Any = None
        self.pending_count = 0
        self.origin: int | None = None
        self.next_chunk = 0
        self.next_lane_frame = 0
        self.lane_db: float | None = None  # smoothed total gain, dB
        self.target_db: float | None = None  # the latest solve's total gain, dB
        self.lane_y = np.zeros(_LANE_RING_FRAMES)  # the lane as written, dB (total gain)
        self.rewind_to: int | None = None  # first frame to rewrite after a new solve
        self.unity_db = 0.0
        self.noise_levels: deque[float] = deque(
            maxlen=max(1, int(UNITY_HISTORY_S / req.lane_hop_s))
        )
        self.music_levels: deque[float] = deque(
            maxlen=max(1, int(UNITY_HISTORY_S * self.sr / CHUNK_SAMPLES))
        )
        self.meter: list[MeterPoint] = []
        # recording
        self.rec_noise: list[np.ndarray] = []
        self.rec_music: list[np.ndarray] = []
        self.rec_out_pos = 0
        self.rec_lane: list[tuple[int, float, float]] = []

    # -- one pass ---------------------------------------------------------------------

    def step(self) -> bool:
        # The lane is extended between the heavier jobs too: it is what runs out first.
        did = self._extend_lane()
        did = self._drain_noise() or did
        did = self._analyse() or did
        self._extend_lane()
        did = self._generate() or did
        self._extend_lane()
        did = self._music_mel() or did
        did = self._solve() or did
        did = self._extend_lane() or did
        if self.e.out_ring is not None:
            did = self.drain_record() or did
        return did

    def _drain_noise(self) -> bool:
        ring = self.e.noise_ring
        wp = ring.write_pos
        if wp == self.noise_pos:
            return False
        if wp - self.noise_pos > ring.capacity:
            self.e.stats.noise_overruns += 1
            lost = wp - ring.capacity - self.noise_pos
            self.noise_pos = wp - ring.capacity
            self.noise_in += int(round(lost / self.ratio))  # keep the timelines in step
            if self.noise_rs is not None:
                import soxr

                self.noise_rs = soxr.ResampleStream(self.rate, self.sr, 1, dtype="float32")
        block = ring.copy_range(self.noise_pos, wp - self.noise_pos)
        if not np.all(np.isfinite(block)):
            # a broken input must not stop the music: NaN/inf samples count as silence
            np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if self.e.settings.record:
            self.rec_noise.append(block[0].copy())
        self.noise_pos = wp
        x = block if self.noise_rs is None else self.noise_rs.resample_chunk(block[0])[None, :]
        self.noise.put_at(self.noise_in, x)
        self.noise_in += x.shape[1]
        # mel frames with their full right context
        ready = (self.noise_in - 1 - MEL_CONTEXT_FRAMES * HOP_SAMPLES) // HOP_SAMPLES + 1
        if ready - self.noise_mel_done >= MEL_BATCH_FRAMES:
            f0 = max(self.noise_mel_done, ready - self.noise_mel.capacity + 1)
            mel = _mel_frames(lambda a, b: self.noise.get(a, b)[0], f0, ready)
            self.noise_mel.put_at(f0, mel)
            self.noise_mel_done = ready
        return True

    # -- analysis and plans -------------------------------------------------------------

    def _analyse(self) -> bool:
        s = self.e.settings
        if self.noise_mel_done * HOP_SAMPLES < self.next_analysis:
            return False
        self.next_analysis += int(s.analysis_hop_s * self.sr)
        f1 = self.noise_mel_done
        f0 = max(0, f1 - int(s.history_s * self.sr / HOP_SAMPLES))
        analysis = self._analysis(f0, f1)
        self.e.stats.analyses += 1
        if self.origin is None:
            self.origin = self._play() + int(s.start_lead_s * self.sr)
            self.next_chunk = 0
            self.music_mel_done = self.origin // HOP_SAMPLES
        candidate = self._plan(analysis, f0 * HOP_SAMPLES)
        if self.plan is None:
            self._take(candidate, first=True)
        elif not _differs(candidate, self.plan):
            self.pending, self.pending_count = None, 0
        else:
            if self.pending is not None and not _differs(candidate, self.pending):
                self.pending_count += 1
            else:
                self.pending, self.pending_count = candidate, 1
            need = max(1, math.ceil(s.hysteresis_s / s.analysis_hop_s))
            if self.pending_count >= need:
                self._take(candidate, first=False)
                self.pending, self.pending_count = None, 0
        return True

    def _analysis(self, f0: int, f1: int) -> StemAnalysis:
        from ..mask import high_energy_mask

        audio = self.noise.get(f0 * HOP_SAMPLES, (f1 - 1) * HOP_SAMPLES + 1)[0]
        mel = self.noise_mel.get(f0, f1)
        mask = high_energy_mask(mel, self.e.request.mask_area)
        return analyse_stem(audio.astype(np.float64), mel, mask)

    def _plan(self, analysis: StemAnalysis, start_sample: int) -> Any:
        """The generator's plan for an analysis of history from ``start_sample`` on,
        on the generator's timeline (beat phase moved), without the parts a live stream
        cannot play: dynamics from future frames (the lane follows the level) and hits
        on noise events (they would need the event before it happens)."""
        from ..generators.procedural import make_plan

        assert self.origin is not None
        shift = (start_sample - self.origin) / self.sr
        moved = replace(analysis, beat_phase_s=analysis.beat_phase_s + shift)
        plan = make_plan(moved, self.gen_settings, self.options)
        profile = plan.profile
        if profile is not None:
            profile = replace(profile, event_times_s=np.zeros(0))
        return replace(plan, gain_frames=np.ones(1), profile=profile)

    def _take(self, plan: Any, *, first: bool) -> None:
        from ..generators.procedural import TimelineRenderer

        old = self.renderer
        self.renderer = TimelineRenderer(plan, first_chunk=self.next_chunk)
        self.fade_from = None if first else old
        self.plan = plan
        st = self.e.stats
        if not first:
            st.plan_switches += 1
        st.tempo_bpm, st.key, st.style = float(plan.tempo_bpm), plan.key_name, plan.style.name
        st.plans.append(
            {
                "from_s": (self.origin + self.next_chunk * self.chunk) / self.sr
                if self.origin is not None
                else 0.0,
                "tempo_bpm": round(float(plan.tempo_bpm), 3),
                "tempo_source": plan.tempo_source,
                "key": plan.key_name,
                "style": plan.style.name,
            }
        )

    # -- generation ----------------------------------------------------------------------

    def _generate(self) -> bool:
        e, s = self.e, self.e.settings
        if self.renderer is None or self.origin is None:
            return False
        ring = e.music_ring
        did = False
        while True:
            start = self.origin + self.next_chunk * self.chunk
            play = self._play()
            if start >= play + s.ahead_s * self.sr:
                break
            if start + self.chunk <= play + XFADE_SAMPLES:
                # Fell behind the play head: skip to a chunk that can still be played.
                ahead = play + XFADE_SAMPLES + int(0.2 * self.sr) - self.origin
                self.next_chunk = max(self.next_chunk + 1, -(-ahead // self.chunk))
                from ..generators.procedural import TimelineRenderer

                self.renderer = TimelineRenderer(self.plan, first_chunk=self.next_chunk)
                self.fade_from = None
                self.music_rs = None  # a gap: the resampler starts afresh
                continue
            if ring.write_pos > ring.read_pos and ring.free() < self.chunk * self.ratio + 64:
                break
            if start < self.music_written:
                break  # already written (cannot happen; guards the ring)
            audio = self._render_chunk(self.next_chunk)
            if e.texture is None:
                e.texture = self._make_texture()
            self._write_music(start, audio)
            self.music_written = start + audio.shape[1]
            self.music_mono.put_at(start, audio.mean(axis=0, keepdims=True))
            lufs = integrated_lufs(audio, self.sr)
            if lufs > -70.0:
                self.music_levels.append(lufs)
            self.next_chunk += 1
            did = True
        return did

    def _play(self) -> int:
        """The play head on the worker's (44.1 kHz) timeline, samples."""
        return int(self.e.pos / self.ratio)

    def _write_music(self, start: int, audio: np.ndarray) -> None:
        """Music generated for ``start`` (worker rate) into the ring at the stream's rate."""
        ring = self.e.music_ring
        if self.rate == self.sr:
            ring.write_at(start, audio)
            return
        if self.music_rs is None or start != self.music_written:
            import soxr

            # (re)start the streaming resampler at this chunk; its output starts at the
            # chunk's place on the stream's timeline (its small delay is ignored: under 1 ms)
            self.music_rs = soxr.ResampleStream(self.sr, self.rate, 2, dtype="float32")
            out = self.music_rs.resample_chunk(np.ascontiguousarray(audio.T))
            ring.write_at(max(ring.write_pos, int(round(start * self.ratio))), out.T)
            return
        ring.write_from(
            np.ascontiguousarray(self.music_rs.resample_chunk(np.ascontiguousarray(audio.T)).T)
        )

    def _render_chunk(self, c: int) -> np.ndarray:
        from ..generators.procedural import CHUNK_SAMPLES

        new = self.renderer.render(c * CHUNK_SAMPLES, CHUNK_SAMPLES)
        if self.fade_from is None:
            return new
        old = self.fade_from.render(c * CHUNK_SAMPLES, CHUNK_SAMPLES)
        self.fade_from = None
        t = np.linspace(0.0, math.pi / 2.0, CHUNK_SAMPLES, dtype=np.float32)
        return (old * np.cos(t) + new * np.sin(t)).astype(np.float32)

    def _make_texture(self) -> np.ndarray:
        """One bar of the plan's music (its second), looped with an equal-power
        crossfade of :data:`XFADE_SAMPLES` at the seam: what plays when the worker is late."""
        plan = self.plan
        bar = int(round(plan.bar_s * self.sr))
        x = min(XFADE_SAMPLES, bar // 2)
        a = int(round((plan.phase_s + plan.bar_s) * self.sr))
        seg = self.renderer.render(a, bar + x)
        if self.rate != self.sr:
            import soxr

            seg = np.ascontiguousarray(soxr.resample(seg.T, self.sr, self.rate).T, dtype=np.float32)
            bar, x = int(round(bar * self.ratio)), int(round(x * self.ratio))
        loop = seg[:, :bar].copy()
        t = np.linspace(0.0, math.pi / 2.0, x, dtype=np.float32)
        loop[:, :x] = seg[:, :x] * np.sin(t) + seg[:, bar : bar + x] * np.cos(t)
        return np.ascontiguousarray(loop, dtype=np.float32)

    def _music_mel(self) -> bool:
        ready = (self.music_written - 1 - MEL_CONTEXT_FRAMES * HOP_SAMPLES) // HOP_SAMPLES + 1
        if ready - self.music_mel_done < 64:
            return False
        f0 = max(self.music_mel_done, ready - 1024)
        mel = _mel_frames(lambda a, b: self.music_mono.get(a, b)[0], f0, ready)
        self.music_mel.put_at(f0, mel)
        self.music_mel_done = ready
        return True

    # -- Stage 2 -----------------------------------------------------------------------

    def _solve(self) -> bool:
        from ..amplify import solve_gain_for_coverage, solve_lambda_exact
        from ..mask import high_energy_mask
        from ..masking import masking_field

        e, req, ls = self.e, self.e.request, self.lane_settings
        if self.origin is None or self.e.texture is None:
            return False
        end = self.noise_mel_done
        if end < max(self.next_lane_frame, ls.window_frames):
            return False
        origin_frame = -(-self.origin // HOP_SAMPLES)
        m0 = max(end, origin_frame)
        if self.music_mel_done < m0 + ls.window_frames:
            return False
        self.next_lane_frame = end + ls.hop_frames
        w = ls.window_frames
        noise_mel = self.noise_mel.get(end - w, end).astype(np.float64)
        music_mel = self.music_mel.get(m0, m0 + w).astype(np.float64)
        noise_audio = self.noise.get((end - w) * HOP_SAMPLES, end * HOP_SAMPLES)[0]
        noise_lufs = integrated_lufs(noise_audio, self.sr)
        if noise_lufs > -70.0:
            self.noise_levels.append(noise_lufs)
        if self.noise_levels and self.music_levels:
            self.unity_db = _power_mean_db(self.noise_levels) - _power_mean_db(self.music_levels)
        unity = 10.0 ** (self.unity_db / 20.0)
        mask = high_energy_mask(noise_mel, req.mask_area)
        field = masking_field(req.threshold_model, noise_mel, music_mel * unity, smr_db=req.smr_db)
        if ls.objective == "coverage":
            gain = solve_gain_for_coverage(field, mask, ls.target_coverage)
        else:
            gain = solve_lambda_exact(music_mel * unity, field, mask, ls.alpha)
        raw_db = 20.0 * math.log10(gain) if gain > 0 else -math.inf
        target = min(max(raw_db, ls.min_gain_db), ls.max_gain_db)
        if req.max_loudness_lu is not None and self.noise_levels:
            # The ceiling follows the noise window's own loudness (a render's is relative
            # to the whole stem's): the music at most max_loudness_lu over the noise now.
            now = noise_lufs if noise_lufs > -70.0 else _power_mean_db(self.noise_levels)
            target = min(target, req.max_loudness_lu + now - _power_mean_db(self.noise_levels))
        peak = float(np.max(np.abs(self.music_mono.get(m0 * HOP_SAMPLES, (m0 + w) * HOP_SAMPLES))))
        if peak > 0:
            # the mono peak understates a stereo one by at most the pan law: 3 dB more room
            target = min(target, PEAK_CEILING_DBFS - 3.0 - 20.0 * math.log10(peak) - self.unity_db)
        self.target_db = target + self.unity_db
        if self.lane_db is None:
            self.lane_db = self.target_db
        else:
            # Rewrite the lane not yet played from the new target on, so the lead written
            # ahead adds no latency. The callback ramps from the gain it last applied, so
            # a frame changed under it only changes a ramp's slope: no step.
            safe = (self._play() + int(e.settings.max_block / self.ratio)) // HOP_SAMPLES + 2
            if e.lane_write_frame > safe:
                self.lane_db = float(self.lane_y[(safe - 1) % _LANE_RING_FRAMES])
                self.rewind_to = safe
        self._extend_lane()
        lam = self.lane_db - self.unity_db
        need = field.required_gain()[mask]
        # music_mel was scaled by unity: the field's gains are relative to the matched music
        cov = float(np.mean(need <= 10.0 ** (lam / 20.0))) if need.size else 1.0
        music_lufs = (
            (_power_mean_db(self.music_levels) if self.music_levels else -70.0)
            + self.unity_db
            + lam
        )
        point = MeterPoint(
            time_s=end * HOP_SAMPLES / self.sr,
            coverage=cov,
            lambda_db=lam,
            target_db=target,
            noise_lufs=noise_lufs,
            music_lufs=music_lufs,
        )
        self.meter.append(point)
        e.stats.solves += 1
        if e.on_meter is not None:
            e.on_meter(point)
        return True

    def _extend_lane(self) -> bool:
        """Write lane frames from where the lane ends (or the play head, if the worker
        is late) to ``lane_lead_s`` ahead of the play head: a causal one-pole towards the
        latest solve's target (time constant ``smoothing_s / 2``) under the slew limit."""
        e, req = self.e, self.e.request
        if self.target_db is None or self.lane_db is None:
            return False
        target_db = self.target_db
        play = self._play() // HOP_SAMPLES
        first = max(e.lane_write_frame, play)
        if self.rewind_to is not None:
            first, self.rewind_to = self.rewind_to, None
        last = play + 2 + int(e.settings.lane_lead_s * self.sr / HOP_SAMPLES)
        if last <= first:
            return False
        tau = req.smoothing_s / 2.0
        a = 1.0 - math.exp(-0.01 / tau) if tau > 0 else 1.0
        step = self.lane_settings.step_db
        y = self.lane_db
        cap = _LANE_RING_FRAMES
        for f in range(first, max(first, last)):
            d = (target_db - y) * a
            if d > step:
                d = step
            elif d < -step:
                d = -step
            y += d
            self.lane_y[f % cap] = y
            e.lane_gain[f % cap] = 10.0 ** (y / 20.0)
            if e.settings.record:
                self.rec_lane.append((f, y - self.unity_db, y))
        self.lane_db = y
        e.lane_write_frame = max(last, e.lane_write_frame)  # publish after the frames are in
        return True

    # -- recording -----------------------------------------------------------------------

    def drain_record(self) -> bool:
        ring = self.e.out_ring
        if ring is None or ring.write_pos == self.rec_out_pos:
            return False
        wp = ring.write_pos
        self.rec_music.append(ring.copy_range(self.rec_out_pos, wp - self.rec_out_pos))
        self.rec_out_pos = wp
        return True

    def recording(self) -> LiveRecording:
        noise = np.concatenate(self.rec_noise) if self.rec_noise else np.zeros(0, np.float32)
        music = (
            np.concatenate(self.rec_music, axis=1)
            if self.rec_music
            else np.zeros((2, 0), np.float32)
        )
        lane: dict[int, tuple[float, float]] = {}
        for f, lam, g in self.rec_lane:
            lane[f] = (lam, g)  # a rewrite (after a late worker) replaces the frame
        frames = np.array(sorted(lane), dtype=np.int64)
        return LiveRecording(
            sample_rate_hz=self.rate,
            noise=noise,
            music=music,
            lane_times_s=frames * HOP_SAMPLES / self.sr,
            lane_db=np.array([lane[f][0] for f in frames], dtype=np.float64),
            gain_db=np.array([lane[f][1] for f in frames], dtype=np.float64),
            meter=tuple(self.meter),
            stats=self.e.stats,
        )


def _power_mean_db(levels: deque[float]) -> float:
    return 10.0 * math.log10(float(np.mean(10.0 ** (np.asarray(levels) / 10.0))))


def _differs(a: Any, b: Any) -> bool:
    """Whether two plans differ enough to switch: tempo, beat phase, key or register."""
    if abs(math.log(a.tempo_bpm / b.tempo_bpm)) > math.log1p(TEMPO_TOLERANCE):
        return True
    if (a.tonic_pc, a.minor) != (b.tonic_pc, b.minor):
        return True
    if abs(a.chord_centre_midi - b.chord_centre_midi) > REGISTER_TOLERANCE_ST:
        return True
    d = ((a.phase_s - b.phase_s) / a.beat_s) % 1.0
    return min(d, 1.0 - d) > PHASE_TOLERANCE_BEATS


def run_offline(
    noise: np.ndarray,
    sample_rate_hz: int,
    request: RenderRequest | None = None,
    *,
    block: int = 256,
    settings: LiveSettings | None = None,
) -> LiveRecording:
    """Feed a recording through the engine block by block, the worker stepped after
    every block (as if it were infinitely fast): the offline check of the live engine.

    Args:
        noise: float ``(samples,)`` or ``(channels, samples)``, linear.
        sample_rate_hz: the recording's rate, Hz (the stream's).
        request: the render request.
        block: frames per block (64..4096).
        settings: stream controls (``record`` is forced on).
    """
    x = np.asarray(noise, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    base = settings or LiveSettings()
    s = replace(
        base,
        sample_rate_hz=sample_rate_hz,
        record=True,
        input_channels=1,
        max_block=max(block, MIN_BLOCK),
    )
    engine = LiveEngine(request, s)
    engine.ramp_for(block)
    engine.start(threaded=False)
    out = np.zeros((s.output_channels, block), dtype=np.float32)
    for p in range(0, x.size - block + 1, block):
        engine.process(x[p : p + block], out)
        while engine.step():
            pass
    engine.stop()
    return engine.recording()
