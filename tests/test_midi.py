"""The MIDI CC lane, read back with mido (an independent reader) and rebuilt within the
quantisation error."""

from __future__ import annotations

import io
import re

import mido
import numpy as np
import pytest

from bnmusic_bridge.errors import ParameterError
from bnmusic_bridge.export.lanes import LaneOptions
from bnmusic_bridge.export.midi import CCMapping, default_mapping, lane_midi, result_midi

try:
    from .test_lanes import FRAME_RATE_HZ, smooth_lane, synthetic_result
except ImportError:  # tests/ run as plain modules (no package)
    from test_lanes import FRAME_RATE_HZ, smooth_lane, synthetic_result


def read_back(data: bytes):
    """(file, [(seconds, cc value, channel, control)], {meta type: message}) through
    mido, converting ticks to seconds with the file's own tempo map."""
    midi = mido.MidiFile(file=io.BytesIO(data))
    metas: dict[str, mido.MetaMessage] = {}
    events = []
    tick = 0
    tempo = None
    for msg in midi.tracks[0]:
        tick += msg.time
        if msg.is_meta:
            metas.setdefault(msg.type, msg)
            if msg.type == "set_tempo":
                tempo = msg.tempo
        elif msg.type == "control_change":
            assert tempo is not None, "tempo must come before the first event"
            events.append(
                (
                    mido.tick2second(tick, midi.ticks_per_beat, tempo),
                    msg.value,
                    msg.channel,
                    msg.control,
                )
            )
    return midi, events, metas, tick


def mapping_from_text(text: str) -> tuple[float, float]:
    m = re.search(r"low_db=(-?[\d.]+) high_db=(-?[\d.]+)", text)
    assert m, text
    return float(m.group(1)), float(m.group(2))


def rebuild(events, at_s: np.ndarray, low_db: float, high_db: float) -> np.ndarray:
    """The lane a DAW plays from the CC events: each value held until the next."""
    times = np.array([e[0] for e in events])
    values = np.array([e[1] for e in events], dtype=float)
    idx = np.searchsorted(times, at_s, side="right") - 1
    return low_db + values[np.clip(idx, 0, None)] * (high_db - low_db) / 127


@pytest.mark.parametrize(
    ("cc", "channel", "bpm", "signature", "tpb"),
    [(11, 1, 120.0, (4, 4), 480), (7, 16, 93.5, (3, 4), 960), (11, 10, 174.0, (7, 8), 96)],
)
def test_round_trip_rebuilds_the_lane_within_half_a_step(cc, channel, bpm, signature, tpb):
    n = 3000
    times_s = np.arange(n) / FRAME_RATE_HZ
    gain_db = smooth_lane(n, seed=5)
    data = lane_midi(
        times_s,
        gain_db,
        end_s=30.5,
        cc=cc,
        channel=channel,
        bpm=bpm,
        time_signature=signature,
        ticks_per_beat=tpb,
    )
    midi, events, metas, end_tick = read_back(data)
    assert midi.type == 0 and len(midi.tracks) == 1 and midi.ticks_per_beat == tpb
    assert metas["set_tempo"].tempo == mido.bpm2tempo(bpm)
    assert (metas["time_signature"].numerator, metas["time_signature"].denominator) == signature
    assert {(e[2], e[3]) for e in events} == {(channel - 1, cc)}
    low, high = mapping_from_text(metas["text"].text)
    assert f"CC{cc}" in metas["track_name"].name and f"{low:+g} dB" in metas["track_name"].name
    assert events[0][0] == 0.0 and len(events) < n / 4  # written only where the value moves
    # The clip ends at end_s, to the tick.
    tick_s = mido.tick2second(1, tpb, mido.bpm2tempo(bpm))
    assert abs(mido.tick2second(end_tick, tpb, mido.bpm2tempo(bpm)) - 30.5) <= tick_s / 2 + 1e-9
    # Event times round to the nearest tick, so read each 10 ms point just past the
    # half tick an event may have moved by.
    rebuilt = rebuild(events, times_s + tick_s * 0.5 + 1e-9, low, high)
    step_db = (high - low) / 127
    assert np.max(np.abs(rebuilt - gain_db)) <= step_db / 2 + 1e-9
    # default range: the lane's own, with 3 dB of headroom, in whole dB
    assert low == np.floor(gain_db.min() - 3) and high == np.ceil(gain_db.max() + 3)


def test_given_range_clips_outside_and_holds_inside():
    times_s = np.arange(1000) / FRAME_RATE_HZ
    gain_db = np.linspace(-40.0, 20.0, 1000)
    data = lane_midi(times_s, gain_db, mapping=CCMapping(-30.0, 12.0))
    _, events, metas, _ = read_back(data)
    assert mapping_from_text(metas["text"].text) == (-30.0, 12.0)
    values = [e[1] for e in events]
    assert values[0] == 0 and values[-1] == 127 and values == sorted(values)
    tick_s = mido.tick2second(1, 480, mido.bpm2tempo(120))
    rebuilt = rebuild(events, times_s + tick_s, -30.0, 12.0)
    inside = (gain_db >= -30) & (gain_db <= 12)
    assert np.max(np.abs(rebuilt[inside] - gain_db[inside])) <= 42.0 / 127 / 2 + 1e-9
    assert np.all(rebuilt[gain_db < -30] == -30.0) and np.all(rebuilt[gain_db > 12] == 12.0)


def test_stem_position_shifts_the_events():
    times_s = np.arange(500) / FRAME_RATE_HZ
    gain_db = np.where(times_s < 2.0, -10.0, 0.0)
    _, events, _, _ = read_back(lane_midi(times_s, gain_db, offset_s=8.0, bpm=120.0))
    # default range -13..+3 dB: -10 dB is CC 24, 0 dB is CC 103
    assert [e[1] for e in events] == [24, 103]
    assert events[0][0] == 0.0 and events[1][0] == pytest.approx(10.0, abs=0.0011)


def test_mapping_round_trip_and_default_range():
    m = CCMapping(-33.0, 9.0)
    cc = m.to_cc(np.array([-33.0, 9.0, -12.0, -100.0, 50.0]))
    assert cc.tolist() == [0, 127, round(21 / 42 * 127), 0, 127]
    assert np.allclose(
        m.to_db(m.to_cc(np.linspace(-33, 9, 500))), np.linspace(-33, 9, 500), atol=m.step_db / 2
    )
    flat = default_mapping(np.full(10, -6.0), headroom_db=0.0)
    assert flat.low_db < flat.high_db
    with pytest.raises(ParameterError):
        CCMapping(3.0, 3.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"cc": 128}, "midi_cc"), ({"channel": 17}, "midi_channel"), ({"bpm": 0.0}, "session_bpm"),
     ({"time_signature": (4, 5)}, "time_signature"), ({"ticks_per_beat": 0}, "ticks_per_beat")],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        lane_midi(np.arange(10) / 100, np.zeros(10), **kwargs)


def test_result_midi_uses_the_options():
    res = synthetic_result(5.0)
    opts = LaneOptions(midi_cc=7, midi_channel=3, midi_range_db=(-24.0, 24.0), session_bpm=100.0)
    midi, events, metas, end_tick = read_back(result_midi(res, opts))
    assert {(e[2], e[3]) for e in events} == {(2, 7)}
    assert mapping_from_text(metas["text"].text) == (-24.0, 24.0)
    assert "hvac.wav" in metas["text"].text
    assert mido.tick2second(end_tick, midi.ticks_per_beat, mido.bpm2tempo(100.0)) == pytest.approx(
        5.0, abs=1e-3
    )
