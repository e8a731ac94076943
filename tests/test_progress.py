"""One progress figure per render, real progress inside every stage, and cancel noticed
inside the long loops (counted in loop iterations and events, never in seconds)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

from bnmusic_bridge import pipeline
from bnmusic_bridge.errors import CancelledError
from bnmusic_bridge.progress import (
    MODEL_GENERATORS,
    STAGE_ORDER,
    RenderProgress,
    format_eta,
    stage_weights,
)
from bnmusic_bridge.request import RenderRequest


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_overall_grows_across_stages_and_never_resets():
    clock = FakeClock()
    tracker = RenderProgress({"startup": 1.0, "analyse": 1.0, "generate": 2.0}, clock=clock)
    seen = []
    for stage in ("startup", "analyse", "generate"):
        for f in (0.0, 0.5, 1.0):
            seen.append(tracker.update(stage, f).overall)
    assert seen == sorted(seen)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(1.0)
    assert seen[4] == pytest.approx(0.375)  # startup done (1/4) + half of analyse (1/8)
    # A late event of an earlier stage does not move it back.
    assert tracker.update("analyse", 0.2).overall == pytest.approx(1.0)


def test_time_left_follows_the_pace_after_startup():
    clock = FakeClock()
    tracker = RenderProgress({"startup": 1.0, "analyse": 1.0, "generate": 2.0}, clock=clock)
    tracker.update("startup", 0.0)
    clock.t = 10.0  # slow imports: not the pace of the work
    assert tracker.update("startup", 1.0).eta_s is None
    tracker.update("analyse", 0.0)
    clock.t = 11.0
    state = tracker.update("analyse", 1.0)
    # analyse (1 unit) took 1 s, so generate (2 units) should take 2 s.
    assert state.eta_s == pytest.approx(2.0)
    assert state.elapsed_s == pytest.approx(11.0)
    clock.t = 12.0
    assert tracker.update("generate", 0.5).eta_s == pytest.approx(1.0)


def test_unknown_stages_keep_the_figure():
    tracker = RenderProgress(clock=FakeClock())
    tracker.update("analyse", 1.0)
    before = tracker.state().overall
    assert tracker.update("something-else", 0.5).overall == before


def test_stage_weights_follow_the_request():
    plain = stage_weights(RenderRequest())
    assert "effects" not in plain and plain["startup"] > 0 and "write" in plain
    model = stage_weights(RenderRequest(generator="riffusion"))
    assert model["generate"] > 5 * sum(v for k, v in model.items() if k != "generate")
    assert stage_weights(None, startup=False)["startup"] == 0.0
    assert "write" not in stage_weights(None, write=False)
    assert set(plain) <= set(STAGE_ORDER)


def test_model_generators_match_the_pipeline():
    assert MODEL_GENERATORS == pipeline.MODEL_GENERATORS


def test_format_eta():
    assert format_eta(None) == ""
    assert format_eta(4.4) == "4 s left"
    assert format_eta(125) == "2 min 05 s left"


@pytest.fixture(scope="module")
def stem(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "clacks.wav"
    sf.write(path, clacks(6.0, seed=3), 44100)
    return path


@pytest.fixture(scope="module")
def events(stem) -> list[tuple[str, float]]:
    seen: list[tuple[str, float]] = []
    pipeline.render_file(stem, RenderRequest(seed=1), progress=lambda s, f: seen.append((s, f)))
    return seen


def test_every_stage_reports_progress_inside_it(events):
    stages = list(dict.fromkeys(s for s, _ in events))
    # decoding runs inside "generate", window by window (timed apart in timings_s)
    assert stages == ["startup", "analyse", "generate", "align", "amplify", "output"]
    for stage in ("startup", "analyse", "generate", "align", "amplify"):
        inside = [f for s, f in events if s == stage and 0.0 < f < 1.0]
        assert inside, f"{stage}: no progress between 0 and 1"
        fractions = [f for s, f in events if s == stage]
        assert fractions == sorted(fractions), stage
        assert fractions[0] == 0.0 and fractions[-1] == 1.0


def test_one_figure_for_the_whole_render(events):
    tracker = RenderProgress(stage_weights(RenderRequest(), write=False))
    overall = [tracker.update(s, f).overall for s, f in events]
    assert overall == sorted(overall)
    assert overall[-1] == pytest.approx(1.0)
    # It moves inside stages too: many distinct values, not one step per stage.
    assert len(set(overall)) > 2 * len(set(s for s, _ in events))


def test_startup_is_timed_apart_from_the_stages(stem):
    result = pipeline.render_file(stem, RenderRequest(seed=1))
    t = result.timings_s
    assert {"startup", "analyse", "generate", "decode", "amplify", "total"} <= set(t)
    assert t["total"] == pytest.approx(sum(v for k, v in t.items() if k != "total"))


@pytest.mark.parametrize("stage", ["analyse", "align", "amplify"])
def test_cancel_inside_a_stage_stops_at_that_event(tmp_path, stage):
    path = tmp_path / "short.wav"
    sf.write(path, clacks(2.0, seed=4), 44100)
    after: list[tuple[str, float]] = []
    cancelled = threading.Event()

    def progress(s: str, f: float) -> None:
        if cancelled.is_set():
            after.append((s, f))
        if s == stage and 0.0 < f < 1.0:
            cancelled.set()
            raise CancelledError("cancelled by the test")

    with pytest.raises(CancelledError):
        pipeline.render_file(path, RenderRequest(seed=1), progress=progress)
    assert cancelled.is_set() and after == []


def test_long_loops_report_per_block():
    from bnmusic_bridge import align, spectrogram

    # The overlap-add: a progress call every FFT_FRAMES frames.
    audio = np.zeros((1, 44100 * 12), dtype=np.float32)
    frames = align.num_stft_frames(audio.shape[1])
    gains = np.zeros((align.band_weights().shape[0], frames))
    calls: list[float] = []
    align.apply_band_gains(audio, gains, progress=calls.append)
    assert len(calls) >= frames // align.FFT_FRAMES
    assert calls == sorted(calls) and calls[-1] == 1.0
    # The mel: one call per block of MEL_CHUNK_FRAMES frames.
    mel_calls: list[float] = []
    n = (2 * spectrogram.MEL_CHUNK_FRAMES + 10) * 441
    spectrogram.audio_to_mel(np.zeros(n, dtype=np.float32), progress=mel_calls.append)
    assert len(mel_calls) == 3 and mel_calls[-1] == 1.0


def test_write_reports_files_and_picture_steps(stem, tmp_path):
    from bnmusic_bridge.export import write_outputs

    result = pipeline.render_file(stem, RenderRequest(seed=1))
    calls: list[float] = []
    paths = write_outputs(result, tmp_path / "out", progress=calls.append)
    assert calls == sorted(calls) and calls[-1] == 1.0
    assert len(calls) > len(paths.all())  # the picture's own steps too


def test_osc_job_cancelled_at_its_next_progress_event(stem, tmp_path):
    from bnmusic_bridge.export import ExportOptions
    from bnmusic_bridge.frontends.osc.worker import Gate, JobFailed, JobSpec, execute_job

    spec = JobSpec(
        key="c1",
        noise_path=stem,
        out_dir=tmp_path,
        request=RenderRequest(seed=1),
        export=ExportOptions(),
        client="test",
        meter_hz=10.0,
        lane_tolerance_db=0.1,
        progress_interval_s=0.0,
    )
    cancel = threading.Event()
    sent_after: list[tuple[str, float]] = []

    def progress(s: str, f: float) -> None:
        if cancel.is_set():
            sent_after.append((s, f))
        if s == "align" and 0.0 < f < 1.0:
            cancel.set()  # what /bnmusic/cancel does

    with pytest.raises(JobFailed) as e:
        execute_job(spec, progress, cancel, Gate(), threading.Lock())
    assert e.value.code == "cancelled"
    assert sent_after == []  # the very next event raised: no further loop ran
    assert not any(tmp_path.iterdir())


def test_osc_progress_message_carries_overall_and_time_left():
    from bnmusic_bridge.frontends.osc import protocol as P
    from bnmusic_bridge.frontends.osc.pushes import Pusher

    sent: list[bytes] = []

    class Out:
        def reply(self, origin, packet):  # noqa: ANN001, ANN201
            sent.append(packet)

    class J:
        job_id = "j1"
        origin = None
        overall = 0.42
        eta_s = None

    pusher = Pusher(Out(), 1000.0, "immediate", threading.Event())
    pusher.progress(J(), "align", 0.5)
    J.eta_s = 3.5
    pusher.progress(J(), "align", 0.75)
    first, second = (P.decode_message(p) for p in sent)
    assert first.address == "/bnmusic/progress"
    values = [a.value for a in first.args]
    assert [a.tag for a in first.args] == ["s", "s", "f", "f", "f"]
    assert values[:3] == ["j1", "align", 0.5]
    assert values[3] == pytest.approx(0.42) and values[4] == -1.0
    assert second.args[4].value == pytest.approx(3.5)


def test_imports_stay_lazy(stem, tmp_path):
    """The CLI's parser imports no torch, pyloudnorm or matplotlib; a render without the
    picture never imports matplotlib (it is only for the picture)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bnmusic_bridge.frontends.cli import make_parser\n"
        "make_parser()\n"
        "heavy = ('torch', 'pyloudnorm', 'matplotlib', 'scipy.signal')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "from bnmusic_bridge.frontends.cli import main\n"
        f"main(['render', {str(stem)!r}, '--out', {str(tmp_path)!r}, '--no-plot', '-q'])\n"
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True False"


def test_alignment_slices_keep_every_value():
    """The alignment's FFTs run in slices (a progress call after each); the values are
    those of one FFT over the whole block, bit for bit."""
    from bnmusic_bridge import align

    rng = np.random.default_rng(5)
    x = rng.standard_normal(44100 * 9).astype(np.float64)
    frames = align.num_stft_frames(x.size)
    assert frames > align.FFT_FRAMES  # several slices in the one block
    padded = align._padded(x)
    spectrum = np.fft.rfft(align._frames(padded, 0, frames) * align._window(), axis=-1)
    whole = align.band_weights() @ (np.abs(spectrum) ** 2).T
    calls: list[float] = []
    assert np.array_equal(align.band_powers(x, progress=calls.append), whole)
    assert len(calls) == -(-frames // align.FFT_FRAMES)
