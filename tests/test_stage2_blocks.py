"""Stage 2 on block arrays (issue 18): the masking field, the lambda lane, the caps, the
metering and finish_blend take whole-stem inputs as scratch.DiskArray scratch files, read
them only by time slices, write their whole-stem outputs into a store, and give exactly
the numbers they give on numpy arrays."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from noise_signals import clacks

from bnmusic_bridge import RenderRequest, render, scratch
from bnmusic_bridge import amplify as am
from bnmusic_bridge import blend as bl
from bnmusic_bridge import masking as mk
from bnmusic_bridge import metering as me
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.loudness import integrated_lufs

SR = 44_100
WINDOW_FRAMES = 256  # the default lane window (2.56 s): the widest frame slice Stage 2 takes


class Strict:
    """A DiskArray that fails when read whole (``np.asarray``) or by anything but time
    slices, and (``widest``) when a time slice spans more than that many columns."""

    def __init__(self, x: np.ndarray, widest: int | None = None) -> None:
        self.arr = scratch.DiskArray(x.shape, x.dtype)
        if x.ndim == 1:
            self.arr[0 : x.shape[0]] = x
        else:
            self.arr[:, 0 : x.shape[1]] = x
        self.shape, self.dtype, self.ndim = x.shape, x.dtype, x.ndim
        self.widest = widest

    def __getitem__(self, key: Any) -> np.ndarray:
        cols = key if self.ndim == 1 else key[1]
        assert isinstance(cols, slice), f"not a time slice: {key!r}"
        start, stop, _ = cols.indices(self.shape[-1])
        assert self.widest is None or stop - start <= self.widest, f"slice of {stop - start}"
        return self.arr[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise AssertionError("a whole-stem array was read whole")


def whole(x: Any) -> np.ndarray:
    """A numpy array or a DiskArray as numpy (test side only)."""
    return np.asarray(x.arr if isinstance(x, Strict) else x)


@pytest.fixture(scope="module")
def stem() -> dict[str, Any]:
    """A 6 s mono stem rendered once: its noise, mels, mask and unity music (44.1 kHz)."""
    noise = (clacks(6.0, seed=5) * 0.3).astype(np.float32)
    res = render(noise[None, :], SR, RenderRequest(seed=5, channels="match"))
    return {
        "noise": noise,
        "noise_mel": res.analysis.noise_mel,
        "music_mel": res.analysis.music_mel,
        "mask": res.analysis.mask,
        "music": res.music,
    }


@pytest.fixture(params=["default", "small"])
def block_sizes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Stage 2's block sizes as shipped, or small ones, so a 6 s stem spans many blocks
    (of frames, samples, spreading and metering blocks, true-peak chunks)."""
    # with small blocks the stem spans many, and no mel or mask slice is wider than a
    # lane window (with the shipped ones the 6 s stem is one block)
    if request.param == "small":
        monkeypatch.setattr(scratch, "BLOCK_FRAMES", 97)
        monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 10_007)
        monkeypatch.setattr(mk, "SPREADING_BLOCK_FRAMES", 64)
        monkeypatch.setattr(me, "METER_BLOCK_FRAMES", 50)
        monkeypatch.setattr(me, "_TRUE_PEAK_CHUNK", 20_011)
        monkeypatch.setattr(am, "_CHUNK_SAMPLES", 7_919)
    return request.param


def _on_disk(stem: dict[str, Any], widest: int | None = None) -> dict[str, Any]:
    """The stem's whole-stem arrays as strict DiskArrays (mels and mask: no slice wider
    than ``widest`` frames)."""
    out = {k: Strict(stem[k], widest) for k in ("noise_mel", "music_mel", "mask")}
    out.update({k: Strict(stem[k]) for k in ("noise", "music")})
    return out


def _widest(block_sizes: str) -> int | None:
    """The widest mel or mask slice Stage 2 may take: a lane window with small blocks."""
    return WINDOW_FRAMES if block_sizes == "small" else None


# --- masking field ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["smr", "spreading"])
def test_masking_field_on_disk_is_the_numpy_field(stem, block_sizes, model, tmp_path):
    ref = mk.masking_field(model, stem["noise_mel"], stem["music_mel"], smr_db=21.0)
    disk = _on_disk(stem, _widest(block_sizes))
    store = scratch.DiskStore(str(tmp_path))
    field = mk.masking_field(model, disk["noise_mel"], disk["music_mel"], smr_db=21.0, store=store)
    assert isinstance(field.required, scratch.DiskArray)
    assert field.required.dtype == np.float32 and field.capacity.dtype == np.float32
    assert np.array_equal(whole(field.required), ref.required)
    assert np.array_equal(whole(field.capacity), ref.capacity)
    if model == "smr":  # the music mel itself, not a copy
        assert field.capacity is disk["music_mel"]
        assert not ref.capacity.flags.writeable
    # the field's own whole-stem products, into the store and in memory
    gain = 10 ** (np.linspace(-10.0, 20.0, ref.num_frames) / 20)
    assert np.array_equal(whole(field.required_gain(store=store)), ref.required_gain())
    masked = field.masked(gain, store=store)
    assert isinstance(masked, scratch.DiskArray) and masked.dtype == np.bool_
    assert np.array_equal(whole(masked), ref.masked(gain))
    assert np.array_equal(field.masked(gain), ref.masked(gain))


def test_mel_checks_find_bad_values_in_any_block(stem, monkeypatch):
    monkeypatch.setattr(scratch, "BLOCK_FRAMES", 64)
    noise = stem["noise_mel"].copy()
    noise[3, -2] = np.nan  # in the last block only
    with pytest.raises(ParameterError, match="noise_mel holds NaN"):
        mk.masking_field("smr", Strict(noise, 64), Strict(stem["music_mel"], 64), smr_db=21.0)
    music = stem["music_mel"].copy()
    music[500, 200] = -1e-3
    with pytest.raises(ParameterError, match="music_mel holds negative"):
        mk.masking_field("spreading", Strict(stem["noise_mel"], 64), Strict(music, 64))
    with pytest.raises(ParameterError, match="of one shape"):
        mk.masking_field("smr", Strict(noise[:, :100]), Strict(music), smr_db=21.0)


# --- lane gain, meters, caps ----------------------------------------------------------


def test_lane_gain_for_a_span_of_samples_slices_the_whole_curve(monkeypatch):
    monkeypatch.setattr(am, "_CHUNK_SAMPLES", 1000)  # spans across chunks too
    rng = np.random.default_rng(3)
    frames = 400
    lane = am.LambdaLane(
        frame_times_s=np.arange(frames) * 0.01,
        frame_gain_db=np.cumsum(rng.standard_normal(frames)) * 0.3,
        window_times_s=np.array([2.0]), window_gain_db=np.array([0.0]),
        window_clamped=np.array([False]), min_gain_db=-30.0, max_gain_db=24.0, warnings=(),
        objective="coverage",
    )  # fmt: skip
    n = 190_000  # past the lane's end: held
    full = am.lane_gain_at(lane, n, 48_000, start_s=0.25)
    for a, b in [(0, n), (0, 1), (999, 1001), (12_345, 98_765), (n - 7, n), (5000, 5000)]:
        part = am.lane_gain_at(lane, b - a, 48_000, start_s=0.25, first_sample=a)
        assert np.array_equal(part, full[a:b])
    with pytest.raises(ParameterError):
        am.lane_gain_at(lane, 10, 48_000, first_sample=-1)


def test_apply_lane_on_disk(stem, block_sizes, tmp_path):
    music = stem["music"]
    frames = music.shape[1] // 441 + 1
    lane = am.LambdaLane(
        frame_times_s=np.arange(frames) * 0.01,
        frame_gain_db=np.linspace(-6.0, 9.0, frames),
        window_times_s=np.array([1.0]), window_gain_db=np.array([0.0]),
        window_clamped=np.array([False]), min_gain_db=-30.0, max_gain_db=24.0, warnings=(),
        objective="coverage",
    )  # fmt: skip
    ref = am.apply_lane(music, SR, lane)
    out = am.apply_lane(Strict(music), SR, lane, store=scratch.DiskStore(str(tmp_path)))
    assert isinstance(out, scratch.DiskArray) and np.array_equal(whole(out), ref)
    gains = am.lane_gain_at(lane, music.shape[1], SR)
    assert np.array_equal(ref, (music * gains[None, :]).astype(np.float32))
    again = am.apply_lane(Strict(music * 2.0), SR, lane, out=out)  # rewritten in place
    assert again is out
    assert np.array_equal(whole(out), am.apply_lane(music * 2.0, SR, lane))


def test_meters_and_caps_on_disk(stem, block_sizes):
    music, noise = stem["music"], stem["noise"]
    hot = music * 30.0
    for audio, plus in [(hot, None), (hot, noise[None, :]), (hot[0], noise), (noise, None)]:
        disk_plus = None if plus is None else Strict(plus)
        assert me.sample_peak_dbfs(Strict(audio), plus=disk_plus) == me.sample_peak_dbfs(
            audio, plus=plus
        )
        assert me.true_peak_dbtp(Strict(audio), SR, plus=disk_plus) == me.true_peak_dbtp(
            audio, SR, plus=plus
        )
    frames = stem["mask"].shape[1]
    bounds = am.window_bounds(frames, WINDOW_FRAMES, 128)
    for audio in (music, music[0]):
        assert np.array_equal(
            bl.loudness_caps_db(Strict(audio), -20.0, 3.0, bounds, frames),
            bl.loudness_caps_db(audio, -20.0, 3.0, bounds, frames),
        )
        assert np.array_equal(
            bl.peak_caps_db(Strict(audio), frames, -1.0), bl.peak_caps_db(audio, frames, -1.0)
        )


def test_window_frames_sum_as_the_numpy_slice_does():
    """A window's music is summed (the paper loss's volume term) in the layout of a
    slice of the numpy array, strided, whose float64 sum can round differently from a
    contiguous copy's (on this wide-range data about half the spans do, numpy 2.x): the
    DiskArray's window gives the numpy window's bits."""
    rng = np.random.default_rng(1)
    music = (rng.random((512, 600), dtype=np.float32) ** 4 * 0.01).astype(np.float32)
    disk = Strict(music)
    spans = [(0, music.shape[1]), (0, 256), (344, 600)]
    spans += [tuple(sorted(rng.integers(0, music.shape[1] + 1, 2))) for _ in range(40)]
    for a, b in spans:
        window = am._frames(disk, a, b)
        assert np.array_equal(window, music[:, a:b])
        assert np.sum(window, dtype=np.float64) == np.sum(music[:, a:b], dtype=np.float64)


def test_whole_stem_solvers_on_disk(stem, monkeypatch):
    """The paper loss and the solvers on a whole stem of many frame blocks: a DiskArray
    gives the numpy input's numbers exactly (both are summed block by block)."""
    monkeypatch.setattr(scratch, "BLOCK_FRAMES", 97)
    monkeypatch.setattr(me, "METER_BLOCK_FRAMES", 50)
    field = mk.masking_field("spreading", stem["noise_mel"], stem["music_mel"])
    disk = _on_disk(stem, 97)
    dfield = mk.MaskingField(
        Strict(np.asarray(field.required), 97), Strict(np.asarray(field.capacity), 97),
        field.model, field.margin_db,
    )  # fmt: skip
    args = (stem["music_mel"], field, stem["mask"])
    dargs = (disk["music_mel"], dfield, disk["mask"])
    for alpha in (0.0, 1e-4, 1e-2):
        assert am.solve_lambda_exact(*dargs, alpha) == am.solve_lambda_exact(*args, alpha)
        assert am.paper_loss(1.7, *dargs, alpha) == am.paper_loss(1.7, *args, alpha)
        assert am.solve_lambda_gd(*dargs, alpha, steps=50) == am.solve_lambda_gd(
            *args, alpha, steps=50
        )
    for target in (0.0, 0.5, 0.9, 1.0):
        assert am.solve_gain_for_coverage(
            dfield, disk["mask"], target
        ) == am.solve_gain_for_coverage(field, stem["mask"], target)
    g = 10 ** (np.linspace(0.0, 12.0, field.num_frames) / 20)
    for got, want in zip(
        me.coverage(dfield, disk["mask"], g), me.coverage(field, stem["mask"], g), strict=True
    ):
        assert np.array_equal(got, want, equal_nan=True)
    assert me.relative_disturbed_frames(
        disk["noise_mel"], dfield, g
    ) == me.relative_disturbed_frames(stem["noise_mel"], field, g)


# --- plan_blend + finish_blend ----------------------------------------------------------


def _same_blend(got: bl.Blend, want: bl.Blend) -> None:
    for name in ("frame_gain_db", "window_gain_db", "window_target", "window_coverage"):
        assert np.array_equal(getattr(got.lane, name), getattr(want.lane, name), equal_nan=True), (
            name
        )
    assert np.array_equal(got.coverage_per_frame, want.coverage_per_frame, equal_nan=True)
    assert np.array_equal(got.nmr_per_frame_db, want.nmr_per_frame_db)
    assert np.array_equal(got.caps.combined_db, want.caps.combined_db)
    assert (got.coverage, got.nmr_db, got.trim_db) == (want.coverage, want.nmr_db, want.trim_db)
    assert (got.shortfalls, got.warnings) == (want.shortfalls, want.warnings)
    assert (got.rendered, got.bus_trim, got.motion) == (want.rendered, want.bus_trim, want.motion)


@pytest.mark.parametrize(
    ("model", "objective", "peak_mode"),
    [
        ("smr", "paper", "lane"),
        ("smr", "coverage", "bus-trim"),
        ("spreading", "coverage", "lane"),
        ("spreading", "paper", "bus-trim"),
    ],
)
def test_plan_and_finish_on_disk_give_the_numpy_blend(
    stem, block_sizes, model, objective, peak_mode, tmp_path
):
    req = RenderRequest(
        threshold_model=model, objective=objective, peak_mode=peak_mode,
        max_loudness_lu=0.0, target_coverage=0.9,
    )  # fmt: skip
    settings = bl.BlendSettings.from_request(req)
    noise_lufs = integrated_lufs(stem["noise"], SR)
    store = scratch.DiskStore(str(tmp_path))
    disk = _on_disk(stem, _widest(block_sizes))
    want = bl.plan_blend(
        stem["noise_mel"], stem["music_mel"], stem["mask"], stem["music"], noise_lufs, settings
    )
    got = bl.plan_blend(
        disk["noise_mel"], disk["music_mel"], disk["mask"], disk["music"], noise_lufs,
        settings, store=store,
    )  # fmt: skip
    assert isinstance(got.field.required, scratch.DiskArray)
    assert got.noise_mel is disk["noise_mel"] and got.mask is disk["mask"]
    _same_blend(got, want)
    trimmed = 0
    for hot in (1.0, 2.0):  # 2.0: 6 dB over the plan, past the 0 LU ceiling: trimmed
        music = stem["music"] * hot
        gained, done = bl.finish_blend(want, music, SR, noise=stem["noise"])
        dgained, ddone = bl.finish_blend(
            got, Strict(music), SR, noise=Strict(stem["noise"]), store=store
        )
        assert isinstance(dgained, scratch.DiskArray)
        assert np.array_equal(whole(dgained), gained)
        gains = am.lane_gain_at(done.lane, music.shape[1], SR)
        assert np.array_equal(gained, (music * gains[None, :]).astype(np.float32))
        _same_blend(ddone, done)
        trimmed += done.trim_db < 0.0
    assert trimmed == 1


def test_finish_blend_checks_the_noise_shape(stem):
    settings = bl.BlendSettings.from_request(RenderRequest())
    plan = bl.plan_blend(
        stem["noise_mel"], stem["music_mel"], stem["mask"], stem["music"],
        integrated_lufs(stem["noise"], SR), settings,
    )  # fmt: skip
    from bnmusic_bridge.errors import AudioInputError

    with pytest.raises(AudioInputError, match="bus trim"):
        bl.finish_blend(plan, Strict(stem["music"]), SR, noise=Strict(stem["noise"][:-5]))
    with pytest.raises(AudioInputError, match="music must be"):
        bl.finish_blend(plan, Strict(stem["music"][0]), SR)
    # a float64 noise is metered as float32, as before
    _, want = bl.finish_blend(plan, stem["music"], SR, noise=stem["noise"].astype(np.float64))
    _, got = bl.finish_blend(
        plan, stem["music"], SR, noise=Strict(stem["noise"].astype(np.float64))
    )
    assert dataclasses.asdict(got.bus_trim) == dataclasses.asdict(want.bus_trim)


@pytest.mark.parametrize("model", ["smr", "spreading"])
def test_masking_field_reports_progress_per_block_and_stops_on_cancel(monkeypatch, model):
    from bnmusic_bridge import masking, scratch
    from bnmusic_bridge.errors import CancelledError

    monkeypatch.setattr(scratch, "BLOCK_FRAMES", 64)
    monkeypatch.setattr(masking, "SPREADING_BLOCK_FRAMES", 64)
    rng = np.random.default_rng(3)
    noise = rng.random((512, 300)).astype(np.float32)
    music = rng.random((512, 300)).astype(np.float32)
    seen: list[float] = []
    masking.masking_field(model, noise, music, smr_db=0.0, progress=seen.append)
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] == 1.0

    def cancel(fraction: float) -> None:
        raise CancelledError("stop")

    with pytest.raises(CancelledError):
        masking.masking_field(model, noise, music, smr_db=0.0, progress=cancel)
