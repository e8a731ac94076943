"""Outputs of results whose whole-stem arrays are DiskArrays (long stems): the same
bytes as from numpy arrays, and no whole-array read of a DiskArray on the way."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from noise_signals import clacks

import bnmusic_bridge.export.arrays as arrays
import bnmusic_bridge.export.plot as plot
from bnmusic_bridge.audio import encode_audio, write_audio
from bnmusic_bridge.channel_layout import mask_of
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.export import ExportOptions, write_outputs
from bnmusic_bridge.export.lanes import LANE_FORMATS
from bnmusic_bridge.export.write import audio_extremes, fits_integer
from bnmusic_bridge.pipeline import render
from bnmusic_bridge.request import RenderRequest
from bnmusic_bridge.result import AnalysisArrays, RenderResult
from bnmusic_bridge.scratch import DiskArray

RATE = 44100


class WholeReadError(AssertionError):
    pass


class StrictDiskArray(DiskArray):
    """A DiskArray that fails any whole-array conversion (``np.asarray``, ``np.max``
    of the whole, ...): the export must read it by time slices only."""

    def __array__(self, dtype=None, copy=None):  # type: ignore[no-untyped-def]
        raise WholeReadError("a DiskArray was read whole")


def on_disk(x: np.ndarray, cls: type[DiskArray] = DiskArray) -> DiskArray:
    d = cls(x.shape, x.dtype)
    if x.size:
        if x.ndim == 1:
            d[:] = x
        else:
            d[:, :] = x
    return d


def disk_result(result: RenderResult, cls: type[DiskArray] = DiskArray) -> RenderResult:
    """``result`` with music, music_gained and the analysis arrays as DiskArrays."""
    a = result.analysis
    return dataclasses.replace(
        result,
        music=on_disk(result.music, cls),
        music_gained=on_disk(result.music_gained, cls),
        analysis=AnalysisArrays(
            noise_mel=on_disk(a.noise_mel, cls),
            music_mel=on_disk(a.music_mel, cls),
            mask=on_disk(a.mask, cls),
        ),
    )


@pytest.fixture(scope="module")
def rendered() -> RenderResult:
    rng = np.random.default_rng(3)
    left = clacks(3.0, RATE) + 0.02 * rng.standard_normal(3 * RATE)
    noise = np.stack([left, np.roll(left, 500)]).astype(np.float32)
    req = RenderRequest(peak_mode="lane", max_loudness_lu=None, target_coverage=0.99)
    return render(noise, RATE, req)


def encoded(audio, **kw) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    encode_audio(buf, audio, RATE, **kw)
    return buf.getvalue()


FORMATS = [
    ("wav", 16),
    ("wav", 24),
    ("wav", 32),
    ("flac", 16),
    ("flac", 24),
    ("aiff", 16),
    ("aiff", 24),
]


@pytest.mark.parametrize(("file_type", "bit_depth"), FORMATS)
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_encode_audio_of_a_disk_array_gives_the_numpy_bytes(file_type, bit_depth, channels):
    rng = np.random.default_rng(channels)
    # overs and a length that leaves a short last block (even one as long as the
    # channel count: pedalboard refuses a square first write, not a later one)
    audio = (0.6 * rng.standard_normal((channels, 3 * 1000 + channels))).astype(np.float32)
    mask = mask_of(("FL", "FR", "FC", "LFE", "BL", "BR")) if channels == 6 else None
    kw = dict(bit_depth=bit_depth, file_type=file_type, channel_mask=mask)
    whole = encoded(audio, **kw)
    assert encoded(on_disk(audio), **kw) == whole
    assert encoded(on_disk(audio), block_samples=1000, **kw) == whole
    assert encoded(audio, block_samples=1000, **kw) == whole
    assert encoded(on_disk(audio, StrictDiskArray), block_samples=999, **kw) == whole


def test_encode_audio_of_empty_and_float64_audio():
    empty = np.zeros((2, 0), dtype=np.float32)
    kw = dict(bit_depth=24, file_type="wav")
    assert encoded(on_disk(empty), **kw) == encoded(empty, **kw)
    x = np.linspace(-1.5, 1.5, 5001).reshape(1, -1)  # float64: converted per block
    assert encoded(x, block_samples=100, **kw) == encoded(x.astype(np.float32), **kw)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".aiff"])
def test_write_audio_of_a_disk_array_gives_the_numpy_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((2, 20_000))).astype(np.float32)
    a = write_audio(tmp_path / f"numpy{suffix}", audio, RATE, bit_depth=16)
    b = write_audio(tmp_path / f"disk{suffix}", on_disk(audio, StrictDiskArray), RATE, bit_depth=16)
    assert a.read_bytes() == b.read_bytes()


def test_extremes_and_fits_integer_read_blocks_like_numpy():
    x = np.array([[0.25, -0.5, 0.999], [0.1, -1.0, 0.2]], dtype=np.float32)
    assert audio_extremes(on_disk(x, StrictDiskArray)) == (float(x.min()), float(x.max()))
    assert fits_integer(on_disk(x, StrictDiskArray), 16) == fits_integer(x, 16) is True
    y = x.copy()
    y[1, 1] = -1.0001
    assert not fits_integer(on_disk(y, StrictDiskArray), 24)
    y[0, 0] = np.nan
    lo, hi = audio_extremes(on_disk(y))
    assert np.isnan(lo) and np.isnan(hi)
    assert not fits_integer(on_disk(y), 24)
    assert fits_integer(on_disk(np.zeros((2, 0), np.float32)), 16)


def test_mask_reductions_match_numpy(monkeypatch):
    monkeypatch.setattr(arrays, "BLOCK_FRAMES", 37)  # many blocks, a short last one
    rng = np.random.default_rng(5)
    mask = rng.random((16, 1000)) < 0.3
    disk = on_disk(mask, StrictDiskArray)
    assert np.array_equal(arrays.mask_counts(disk), mask.sum(axis=0))
    assert arrays.mask_share(disk) == mask.mean()
    for step in (1, 2, 3, 36, 37, 38, 999, 1000, 5000):
        assert np.array_equal(arrays.every_nth_column(disk, step), mask[:, ::step])


def _files(folder: Path) -> dict[str, bytes]:
    # the report and the Reaper files name the output folder: compare them without it
    return {
        p.name: p.read_bytes().replace(str(folder).encode(), b"<out>")
        for p in sorted(folder.iterdir())
    }


@pytest.mark.parametrize("opts", [
    ExportOptions(lane_formats=LANE_FORMATS, plot=True),
    ExportOptions(bit_depth=16, file_type="flac", lane_formats=("json",), plot=False),
    ExportOptions(bit_depth=16, file_type="aiff", lane_formats=("csv", "midi"), plot=False),
    ExportOptions(bit_depth=32, lane_formats=("reaper",), plot=True, force=True),
])  # fmt: skip
def test_outputs_of_a_disk_result_equal_the_numpy_ones(rendered, tmp_path, opts):
    a = write_outputs(rendered, tmp_path / "numpy", stem_name="x", options=opts)
    b = write_outputs(disk_result(rendered), tmp_path / "disk", stem_name="x", options=opts)
    assert a.as_dict().keys() == b.as_dict().keys()
    files_a, files_b = _files(tmp_path / "numpy"), _files(tmp_path / "disk")
    assert files_a.keys() == files_b.keys()
    for name in files_a:
        assert files_a[name] == files_b[name], name


def test_export_reads_disk_arrays_only_by_time_slices(rendered, tmp_path):
    # every lane format but the summary, whose loudness meter is not block-safe yet here
    lanes = tuple(f for f in LANE_FORMATS if not f.startswith("summary"))
    opts = ExportOptions(lane_formats=lanes, plot=True)
    write_outputs(rendered, tmp_path / "numpy", stem_name="x", options=opts)
    write_outputs(
        disk_result(rendered, StrictDiskArray), tmp_path / "disk", stem_name="x", options=opts
    )
    assert _files(tmp_path / "numpy") == _files(tmp_path / "disk")


def test_stems_over_full_scale_are_noted_or_refused_alike(rendered, tmp_path):
    loud = dataclasses.replace(rendered, music_gained=rendered.music_gained * 4.0)
    opts = ExportOptions(lane_formats=("json",), plot=False)
    a = write_outputs(loud, tmp_path / "numpy", stem_name="x", options=opts)
    b = write_outputs(disk_result(loud), tmp_path / "disk", stem_name="x", options=opts)
    assert a.notes == b.notes and any("32-bit float" in n for n in a.notes)
    assert _files(tmp_path / "numpy") == _files(tmp_path / "disk")
    flac = ExportOptions(file_type="flac", lane_formats=("json",), plot=False)
    messages = []
    for name, res in (("n", loud), ("d", disk_result(loud, StrictDiskArray))):
        with pytest.raises(ParameterError) as err:
            write_outputs(res, tmp_path / name, stem_name="x", options=flac)
        messages.append(str(err.value).replace(str(tmp_path / name), "<out>"))
    assert messages[0] == messages[1] and "dBFS" in messages[0]


@pytest.mark.parametrize("max_columns", [3000, 7, 1])
def test_plot_of_a_disk_result_equals_the_numpy_one(rendered, monkeypatch, max_columns):
    whole = plot.render_plot_png(rendered, max_columns=max_columns)
    # small blocks: the picked columns and the colour scale come from many reads
    monkeypatch.setattr(plot, "PLOT_BLOCK_FRAMES", 29)
    monkeypatch.setattr(arrays, "BLOCK_FRAMES", 31)
    disk = disk_result(rendered, StrictDiskArray)
    assert plot.render_plot_png(disk, max_columns=max_columns) == whole
    assert np.array_equal(
        plot.smoothed_coverage(disk), plot.smoothed_coverage(rendered), equal_nan=True
    )
