"""Effects chains: built-ins do what their parameters say, bad specs are refused clearly,
external plugins are loaded with their parameters and preset, lengths never change."""

from __future__ import annotations

import numpy as np
import pytest

from bnmusic_bridge import fx
from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.fx import BUILTIN_EFFECTS, apply_effects, build_pedalboard, check_effects

RATE = 44_100


def clacks(seconds: float, period_s: float = 0.5, seed: int = 0) -> np.ndarray:
    """Train-like clacks: decaying 1.8 kHz + noise bursts every ``period_s`` over a
    rumble; mono float32 ``(samples,)`` at 44.1 kHz, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = 0.05 * np.convolve(rng.standard_normal(n), np.ones(200) / 200, mode="same")
    out += 0.01 * rng.standard_normal(n)
    burst = int(0.04 * RATE)
    env = np.exp(-np.arange(burst) / (0.008 * RATE))
    tone = np.sin(2 * np.pi * 1800 * np.arange(burst) / RATE)
    for start in range(0, n - burst, int(period_s * RATE)):
        out[start : start + burst] += 0.4 * env * (tone + 0.5 * rng.standard_normal(burst))
    return (out / np.max(np.abs(out)) * 0.5).astype(np.float32)


def sine(freq_hz: float, seconds: float = 0.5, amp: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def band_level_db(x: np.ndarray, freq_hz: float) -> float:
    """Level of the FFT bin nearest ``freq_hz`` (Hann window), dB."""
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    k = int(round(freq_hz * x.size / RATE))
    return float(20 * np.log10(spec[k - 2 : k + 3].max() + 1e-12))


def test_gain_scales_by_its_db_value():
    x = np.stack([sine(440), sine(660)])
    y = apply_effects(x, RATE, [{"type": "Gain", "gain_db": -6.0}])
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), atol=1e-5)


def test_highpass_removes_lows_and_keeps_highs():
    x = sine(100) + sine(5000)
    y = apply_effects(x, RATE, [{"type": "HighpassFilter", "cutoff_frequency_hz": 1000.0}])
    assert y.ndim == 1 and y.shape == x.shape  # mono in, mono out
    # A 2nd-order high-pass an octave and a bit below 1 kHz: far more than 20 dB down.
    assert band_level_db(y, 100) < band_level_db(x, 100) - 20
    assert abs(band_level_db(y, 5000) - band_level_db(x, 5000)) < 1.0


def test_chain_order_is_the_spec_order():
    x = sine(440, amp=0.5)[None, :]
    gain_then_limit = apply_effects(
        x, RATE, [{"type": "Gain", "gain_db": 12.0}, {"type": "Limiter", "threshold_db": -6.0}]
    )
    limit_then_gain = apply_effects(
        x, RATE, [{"type": "Limiter", "threshold_db": -6.0}, {"type": "Gain", "gain_db": 12.0}]
    )
    # pedalboard's (JUCE's) Limiter brings the threshold up to 0 dBFS, so limiting last
    # peaks at 1.0 and limiting first leaves the +12 dB on top of that.
    assert np.max(np.abs(gain_then_limit)) < 1.05
    assert np.max(np.abs(limit_then_gain)) > 10 ** (9 / 20)


def test_reverb_adds_a_tail_and_keeps_the_length():
    x = np.zeros((2, RATE // 2), np.float32)
    x[:, 100] = 1.0
    dry = apply_effects(x, RATE, [{"type": "Reverb", "wet_level": 0.0, "dry_level": 1.0}])
    wet = apply_effects(x, RATE, [{"type": "Reverb", "room_size": 0.9, "wet_level": 0.5}])
    late = slice(100 + RATE // 20, None)  # 50 ms after the impulse
    assert wet.shape == x.shape
    assert np.sqrt(np.mean(wet[:, late] ** 2)) > 100 * np.sqrt(np.mean(dry[:, late] ** 2) + 1e-20)
    # A long room at the very end: the tail is cut, the length stays.
    end = np.zeros((1, RATE), np.float32)
    end[0, -10] = 1.0
    out = apply_effects(end, RATE, [{"type": "Delay", "delay_seconds": 0.2, "mix": 1.0}])
    assert out.shape == end.shape


def test_enum_parameters_take_names():
    x = clacks(0.5)
    lp = apply_effects(x, RATE, [{"type": "LadderFilter", "mode": "LPF24", "cutoff_hz": 300.0}])
    hp = apply_effects(x, RATE, [{"type": "LadderFilter", "mode": "HPF24", "cutoff_hz": 300.0}])
    assert band_level_db(lp, 5000) < band_level_db(hp, 5000) - 20
    y = apply_effects(
        x, RATE, [{"type": "Resample", "target_sample_rate": 8000.0, "quality": "Linear"}]
    )
    assert y.shape == x.shape


@pytest.mark.parametrize("kind", sorted(BUILTIN_EFFECTS))
def test_every_builtin_runs_at_its_limits(kind, tmp_path):
    """The documented ranges are ones pedalboard accepts and that keep the output finite."""
    x = np.stack([clacks(0.3, seed=1), clacks(0.3, seed=2)])
    specs = [{"type": kind}]
    for end in ("low", "high"):
        spec: dict = {"type": kind}
        for key, rng in BUILTIN_EFFECTS[kind].items():
            if rng.kind == "number":
                value = rng.low if end == "low" else rng.high
                spec[key] = min(value, 20_000.0) if rng.below_nyquist else value
            elif rng.kind == "choice":
                spec[key] = rng.choices[0] if end == "low" else rng.choices[-1]
            else:
                ir = tmp_path / "ir.wav"
                import soundfile

                soundfile.write(ir, np.exp(-np.arange(2000) / 300.0), RATE)
                spec[key] = str(ir)
        specs.append(spec)
    for spec in specs:
        if kind == "Convolution" and "impulse_response_filename" not in spec:
            continue  # needs its file
        y = apply_effects(x, RATE, [spec])
        assert y.shape == x.shape, spec
        assert np.all(np.isfinite(y)), spec


@pytest.mark.parametrize(
    ("effects", "expected"),
    [
        (
            [{"type": "Reverbb"}],
            ["effects[0]", "unknown effect type 'Reverbb'", "did you mean 'Reverb'", "allowed:"],
        ),
        ([{"room_size": 0.5}], ["effects[0]", "needs 'type'"]),
        (
            [{"type": "Reverb", "roomsize": 0.5}],
            ["(Reverb)", "unknown parameter 'roomsize'", "room_size"],
        ),
        ([{"type": "Reverb", "room_size": 1.5}], ["room_size = 1.5", "out of range", "0 to 1"]),
        ([{"type": "Gain", "gain_db": "loud"}], ["gain_db = 'loud'", "wrong type", "-96 to 48 dB"]),
        ([{"type": "Gain", "gain_db": True}], ["gain_db = True", "wrong type"]),
        ([{"type": "LadderFilter", "mode": "LP"}], ["mode = 'LP'", "LPF12"]),
        (
            [{"type": "Gain"}, {"type": "Compressor", "ratio": 0.5}],
            ["effects[1] (Compressor)", "ratio = 0.5", "1 to 100"],
        ),
        (
            [{"type": "plugin", "path": "/nowhere/Foo.vst3"}],
            ["plugin not found: /nowhere/Foo.vst3"],
        ),
        ([{"type": "plugin", "path": "/nowhere/Foo.dll"}], ["is not a plugin", ".vst3"]),
        ([{"type": "plugin"}], ["needs 'path'"]),
        (
            [{"type": "Convolution", "impulse_response_filename": "/nowhere/ir.wav"}],
            ["file not found"],
        ),
        ({"type": "Gain"}, ["must be a list of effect tables"]),
    ],
)
def test_bad_specs_give_one_clear_error(effects, expected):
    with pytest.raises(ParameterError) as info:
        check_effects(effects, where="my.toml: effects")
    message = str(info.value)
    assert message.startswith("my.toml: effects")
    for part in expected:
        assert part in message, (part, message)


def test_frequency_must_be_below_nyquist_at_the_rate_used():
    spec = [{"type": "LowpassFilter", "cutoff_frequency_hz": 30_000.0}]
    check_effects(spec)  # no rate known: within the static range
    with pytest.raises(ParameterError, match="below half the sample rate"):
        apply_effects(np.zeros((1, 1000), np.float32), RATE, spec)


def test_plugin_keys_and_files_are_checked(tmp_path):
    plugin = tmp_path / "Foo.vst3"
    plugin.mkdir()  # a VST3 is a bundle folder on every platform
    check_effects([{"type": "plugin", "path": str(plugin), "parameters": {"mix": 0.5}}])
    with pytest.raises(ParameterError, match="unknown key 'mixx'.*parameters"):
        check_effects([{"type": "plugin", "path": str(plugin), "mixx": 0.5}])
    with pytest.raises(ParameterError, match="preset file not found"):
        check_effects(
            [{"type": "plugin", "path": str(plugin), "preset": str(tmp_path / "a.vstpreset")}]
        )
    with pytest.raises(ParameterError, match=r"\.vstpreset"):
        check_effects([{"type": "plugin", "path": str(plugin), "preset": str(tmp_path / "a.fxp")}])
    with pytest.raises(ParameterError, match="number, text or boolean"):
        check_effects([{"type": "plugin", "path": str(plugin), "parameters": {"mix": [1, 2]}}])


class FakePlugin:
    """Stands in for a loaded VST3: a pass-through with two parameters."""

    def __init__(self) -> None:
        self.parameters = {"mix": 0.0, "drive_db": 0.0}
        self.mix = 0.0
        self.drive_db = 0.0
        self.preset_loaded: str | None = None

    def load_preset(self, path: str) -> None:
        self.preset_loaded = path


def test_external_plugin_is_loaded_with_parameters_and_preset(tmp_path, monkeypatch):
    import pedalboard

    plugin_path = tmp_path / "Foo.vst3"
    plugin_path.mkdir()
    preset = tmp_path / "warm.vstpreset"
    preset.write_bytes(b"VST3")
    made: list[FakePlugin] = []
    calls: list[tuple[str, str | None]] = []

    def fake_load(path: str, plugin_name: str | None = None) -> FakePlugin:
        calls.append((path, plugin_name))
        made.append(FakePlugin())
        return made[-1]

    monkeypatch.setattr(pedalboard, "load_plugin", fake_load)
    # Pedalboard([...]) only accepts real plugins: check the pieces build_pedalboard makes.
    spec = {
        "type": "plugin",
        "path": str(plugin_path),
        "plugin_name": "Foo Stereo",
        "preset": str(preset),
        "parameters": {"mix": 0.3, "drive_db": 4.0},
    }
    built = fx._build_plugin(spec, "effects[0]")
    assert calls == [(str(plugin_path), "Foo Stereo")]
    assert built.mix == 0.3 and built.drive_db == 4.0
    assert built.preset_loaded == str(preset)
    with pytest.raises(
        ParameterError, match=r"has no parameter 'drve_db'.*did you mean 'drive_db'"
    ):
        fx._build_plugin({**spec, "parameters": {"drve_db": 1.0}}, "effects[0]")
    # validate --load-plugins path: check_effects loads it too.
    check_effects([spec], load_plugins=True)
    assert len(calls) == 3


def test_layout_and_empty_chain():
    x = np.stack([sine(440), sine(550)])
    same = apply_effects(x, RATE, [])
    np.testing.assert_array_equal(same, x)
    assert same is not x
    with pytest.raises(ParameterError, match=r"\(channels, samples\)"):
        apply_effects(x.T, RATE, [{"type": "Gain", "gain_db": 0.0}])


def test_build_pedalboard_returns_a_board_users_can_extend():
    import pedalboard

    board = build_pedalboard([{"type": "HighpassFilter", "cutoff_frequency_hz": 80.0}])
    assert isinstance(board, pedalboard.Pedalboard) and len(board) == 1
    board.append(pedalboard.Gain(gain_db=-3.0))
    assert board(sine(440)[None, :], RATE).shape == (1, RATE // 2)


def test_pipeline_runs_the_chain_before_stage_2():
    """A 24 dB/octave low-pass in the request removes the music's highs, and Stage 2's
    analysis (music_mel) sees the filtered music."""
    from bnmusic_bridge import RenderRequest, render

    noise = clacks(1.5)
    base = RenderRequest(prompt="pop", seed=1)
    plain = render(noise, RATE, base)
    filtered = render(
        noise,
        RATE,
        base.replace(effects=({"type": "LadderFilter", "mode": "LPF24", "cutoff_hz": 500.0},)),
    )
    assert plain.music.shape == filtered.music.shape == (2, noise.size)  # stereo by default

    def high_share_db(result) -> float:
        mel = result.analysis.music_mel ** 2  # (512 bands, frames), low bands first
        return float(10 * np.log10(mel[256:].sum() / mel.sum()))

    # Mel bands 256 and up lie above about 2 kHz: two octaves over the cutoff.
    assert high_share_db(filtered) < high_share_db(plain) - 30
    assert "effects" in filtered.timings_s and "effects" not in plain.timings_s


def test_pedalboard_example_script_runs(tmp_path, monkeypatch):
    """examples/pedalboard_noise_to_music.py, on a short stereo noise at 48 kHz."""
    import runpy
    import sys
    from pathlib import Path

    import soundfile

    noise = tmp_path / "noise.wav"
    stereo = np.stack([clacks(1.0, seed=1), clacks(1.0, seed=2)]).T
    soundfile.write(noise, stereo, 48_000, subtype="PCM_24")
    out = tmp_path / "music.wav"
    script = Path(__file__).resolve().parents[1] / "examples" / "pedalboard_noise_to_music.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(noise), str(out)])
    runpy.run_path(str(script), run_name="__main__")
    music, rate = soundfile.read(out, always_2d=True)
    assert rate == 48_000 and music.shape == stereo.shape  # the noise's rate, length, channels
    assert np.all(np.isfinite(music)) and np.any(music)


def test_impulse_responses_must_be_audio_files(tmp_path):
    with pytest.raises(ParameterError, match=r"impulse_response_filename = '/etc/passwd' is not an audio file"):
        check_effects([{"type": "Convolution", "impulse_response_filename": "/etc/passwd"}])
    fake = tmp_path / "ir.wav"  # an audio name that is not there
    with pytest.raises(ParameterError, match="file not found"):
        check_effects([{"type": "Convolution", "impulse_response_filename": str(fake)}])


def test_effect_paths_lists_every_file_a_chain_names():
    chain = [
        {"type": "Reverb", "room_size": 0.3},
        {"type": "Convolution", "impulse_response_filename": "/irs/hall.wav", "mix": 0.2},
        {"type": "plugin", "path": "/vst/Foo.vst3", "preset": "/vst/warm.vstpreset"},
    ]
    assert fx.effect_paths(chain) == [
        (1, "impulse_response_filename", "/irs/hall.wav", "file"),
        (2, "path", "/vst/Foo.vst3", "plugin"),
        (2, "preset", "/vst/warm.vstpreset", "file"),
    ]
