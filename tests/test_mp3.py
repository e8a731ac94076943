"""MP3 input comes back aligned with what libsndfile and DAWs play: the encoder delay
and padding (LAME/Xing header) are honoured, so stems and lanes have libsndfile's
length and the clicks of a click train stay where they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bnmusic_bridge.audio import probe_stem, read_stem
from bnmusic_bridge.frontends.osc.testing import register_fake_generator
from bnmusic_bridge.grid import HOP_SAMPLES
from bnmusic_bridge.pipeline import render_file
from bnmusic_bridge.request import RenderRequest

RATE_HZ = 44100
CLICK_EVERY = 11025  # four clicks a second


def click_train(seconds: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A click train over a little noise (so the stem is audible); the click positions."""
    n = int(seconds * RATE_HZ)
    rng = np.random.default_rng(0)
    x = (0.02 * rng.standard_normal(n)).astype(np.float32)
    clicks = np.arange(4410, n - 4410, CLICK_EVERY)
    x[clicks] = 0.9
    return x, clicks


def peaks(y: np.ndarray, near: np.ndarray, reach: int = 3000) -> np.ndarray:
    """The sample of largest magnitude within ``reach`` of each position in ``near``."""
    return np.array([int(np.argmax(np.abs(y[c - reach : c + reach]))) + c - reach for c in near])


@pytest.fixture(scope="module")
def mp3(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot read or write MP3 (needs >= 1.1)")
    from pedalboard.io import AudioFile

    x, clicks = click_train()
    path = tmp_path_factory.mktemp("mp3") / "clicks – bounce.mp3"
    with AudioFile(str(path), "w", RATE_HZ, 1, quality="V2") as f:  # LAME, as DAWs export
        f.write(x[None, :])
    reference, _ = sf.read(str(path), dtype="float32")
    return path, reference, clicks


def test_pedalboard_alone_is_late_and_long(mp3) -> None:
    # What this guards against: pedalboard's decoder keeps the delay and padding.
    from pedalboard.io import AudioFile

    path, reference, clicks = mp3
    with AudioFile(str(path)) as f:
        raw = f.read(f.frames)[0]
    assert raw.size > reference.size + 500
    assert np.median(peaks(raw, clicks) - clicks) > 500


def test_read_stem_matches_libsndfile(mp3) -> None:
    path, reference, clicks = mp3
    stem = read_stem(path)
    assert probe_stem(path).num_frames == reference.size == stem.audio.shape[1]
    assert np.abs(peaks(stem.audio[0], clicks) - clicks).max() <= 2
    np.testing.assert_allclose(stem.audio[0], reference, atol=1e-6)


def test_render_keeps_libsndfile_length_and_click_positions(mp3) -> None:
    path, reference, clicks = mp3
    # The test generator's music is the noise itself one hop (441 samples) late, so
    # the clicks must come back at click + 441 in the music stem.
    request = RenderRequest(generator=register_fake_generator(), align_strength=0.0)
    result = render_file(path, request)
    assert result.num_samples == reference.size == result.music.shape[1]
    assert result.music_gained.shape[1] == reference.size
    got = peaks(result.music.mean(axis=0), clicks + HOP_SAMPLES, reach=1000)
    assert np.abs(got - (clicks + HOP_SAMPLES)).max() <= 3
    assert result.lane_times_s[-1] <= reference.size / RATE_HZ + 1e-6
