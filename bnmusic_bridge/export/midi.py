"""The lambda lane as a Standard MIDI File of control-change automation (through mido).

Layout: format 0 (one track), so a DAW imports it as one clip or item:

- track name: ``lambda CC11 ch1: 0=-33 dB 127=+9 dB`` (the mapping, readable in any DAW);
- a text meta event with the full mapping (``low_db=... high_db=...``) and units;
- meta event text is stored as UTF-8 bytes (what Reaper and Live show a track name in),
  so any file name a DAW can produce (en dash, CJK, emoji) survives; mido reads it back
  exactly with ``mido.MidiFile(path, charset="utf-8")`` (its default, latin-1, reads
  the same bytes as mojibake, never an error);
- the tempo map: one ``set_tempo`` and one ``time_signature`` at tick 0;
- one control change at tick 0 with the lane's first value, then one wherever the
  quantised value changes; ``end_of_track`` at the stem's end.

Mapping (linear in dB): ``cc = round((gain_db - low_db) / (high_db - low_db) * 127)``,
clipped to 0..127, and back ``gain_db = low_db + cc * (high_db - low_db) / 127``. By
default ``low_db``/``high_db`` are the lane's own minimum and maximum widened by the
headroom (3 dB) and rounded out to whole dB, so the values a user types into a DAW's
mapping are whole numbers.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..result import RenderResult
from .lanes import LaneOptions, check_lane, lane_points

CC_MAX = 127


@dataclass(frozen=True)
class CCMapping:
    """dB <-> MIDI controller value, linear in dB.

    Attributes:
        low_db: gain in dB that CC value 0 stands for.
        high_db: gain in dB that CC value 127 stands for.
    """

    low_db: float
    high_db: float

    def __post_init__(self) -> None:
        if not (
            math.isfinite(self.low_db)
            and math.isfinite(self.high_db)
            and self.low_db < self.high_db
        ):
            raise ParameterError(
                f"CC mapping low_db={self.low_db}, high_db={self.high_db}: need finite low < high"
            )

    @property
    def step_db(self) -> float:
        """dB per controller step; the quantisation error is at most half of it."""
        return (self.high_db - self.low_db) / CC_MAX

    def to_cc(self, gain_db: np.ndarray | float) -> np.ndarray:
        """Controller values 0..127 (int) for gains in dB; gains outside the range clip."""
        x = (
            (np.asarray(gain_db, dtype=np.float64) - self.low_db)
            / (self.high_db - self.low_db)
            * CC_MAX
        )
        return np.clip(np.rint(x), 0, CC_MAX).astype(np.int64)

    def to_db(self, cc: np.ndarray | int) -> np.ndarray:
        """Gains in dB for controller values."""
        return self.low_db + np.asarray(cc, dtype=np.float64) * self.step_db

    def describe(self) -> str:
        return (
            f"gain_db = low_db + cc * (high_db - low_db) / 127, low_db={self.low_db:g} high_db={self.high_db:g} "
            f"(CC 0 = {self.low_db:+g} dB, CC 127 = {self.high_db:+g} dB, {self.step_db:.3f} dB per step, "
            "linear in dB)"
        )


def default_mapping(gain_db: np.ndarray, headroom_db: float = 3.0) -> CCMapping:
    """The lane's own range widened by ``headroom_db`` on both sides, rounded out to
    whole dB (at least 1 dB wide)."""
    g = np.asarray(gain_db, dtype=np.float64)
    low = math.floor(float(g.min()) - headroom_db)
    high = math.ceil(float(g.max()) + headroom_db)
    if high <= low:
        high = low + 1
    return CCMapping(float(low), float(high))


def lane_midi(
    times_s: np.ndarray,
    gain_db: np.ndarray,
    *,
    end_s: float | None = None,
    cc: int = 11,
    channel: int = 1,
    mapping: CCMapping | None = None,
    headroom_db: float = 3.0,
    bpm: float = 120.0,
    time_signature: tuple[int, int] = (4, 4),
    ticks_per_beat: int = 480,
    offset_s: float = 0.0,
    description: str = "",
) -> bytes:
    """A format-0 MIDI file of the lane as CC automation.

    Args:
        times_s: lane point times in seconds (strictly increasing).
        gain_db: lane gain at each point in dB relative to the unity music stem.
        end_s: where the clip ends, in seconds from the stem start (default: the last
            point).
        cc: controller number (0..119; 7 = volume, 11 = expression).
        channel: MIDI channel 1..16.
        mapping: dB <-> CC mapping; None: :func:`default_mapping` with ``headroom_db``.
        bpm: session tempo in beats (quarter notes) per minute.
        time_signature: ``(numerator, denominator)``.
        ticks_per_beat: resolution in ticks per quarter note.
        offset_s: where the stem starts on the timeline in seconds (events shift by it).
        description: extra words for the text meta event (e.g. the music stem's name).

    Each point's value is quantised to a CC value; an event is written at tick 0 and
    wherever the value changes. Times round to the nearest tick
    (``60 / bpm / ticks_per_beat`` s, 1.04 ms at 120 BPM and 480 ticks).
    """
    import mido

    LaneOptions(
        midi_cc=cc,
        midi_channel=channel,
        session_bpm=bpm,
        time_signature=time_signature,
        ticks_per_beat=ticks_per_beat,
        midi_headroom_db=headroom_db,
        stem_position_s=offset_s,
    ).check()
    t = np.asarray(times_s, dtype=np.float64)
    g = np.asarray(gain_db, dtype=np.float64)
    check_lane(t, g)
    m = mapping or default_mapping(g, headroom_db)
    values = m.to_cc(g)
    change = np.flatnonzero(np.diff(values) != 0) + 1
    event_times_s = np.concatenate([[0.0], t[change] + offset_s])
    event_values = np.concatenate([values[:1], values[change]])

    tempo_us = mido.bpm2tempo(bpm)
    # Ticks from the integer tempo the file stores, so a reader gets the same seconds.
    seconds_per_tick = tempo_us * 1e-6 / ticks_per_beat
    ticks = np.rint(event_times_s / seconds_per_tick).astype(np.int64)
    end = max(float(end_s if end_s is not None else t[-1]) + offset_s, float(event_times_s[-1]))
    end_tick = int(round(end / seconds_per_tick))

    num, den = time_signature
    name = f"lambda CC{cc} ch{channel}: 0={m.low_db:+g} dB 127={m.high_db:+g} dB"
    text = (
        f"bnmusic-bridge lambda lane: CC {cc} on MIDI channel {channel}; {m.describe()}; "
        "gain relative to the unity music stem; tempo "
        f"{bpm:g} BPM {num}/{den}" + (f"; {description}" if description else "")
    )
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("text", text=text, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=tempo_us, time=0))
    track.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
    last = 0
    for tick, value in zip(ticks.tolist(), event_values.tolist(), strict=True):
        track.append(
            mido.Message(
                "control_change",
                channel=channel - 1,
                control=cc,
                value=int(value),
                time=tick - last,
            )
        )
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - last)))
    # UTF-8 meta text: latin-1 (mido's default) cannot hold an en dash or CJK.
    midi = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat, charset="utf-8")
    midi.tracks.append(track)
    buf = io.BytesIO()
    midi.save(file=buf)
    return buf.getvalue()


def result_mapping(result: RenderResult, options: LaneOptions | None = None) -> CCMapping:
    """The mapping :func:`result_midi` uses for ``result``."""
    opts = options or LaneOptions()
    if opts.midi_range_db is not None:
        return CCMapping(float(opts.midi_range_db[0]), float(opts.midi_range_db[1]))
    return default_mapping(lane_points(result)[1], opts.midi_headroom_db)


def result_midi(result: RenderResult, options: LaneOptions | None = None) -> bytes:
    """The render's full lane as a MIDI file (see :func:`lane_midi`)."""
    opts = options or LaneOptions()
    times_s, gain_db = lane_points(result)
    name = result.source.name if result.source is not None else "render"
    return lane_midi(
        times_s,
        gain_db,
        end_s=result.num_samples / result.sample_rate_hz,
        cc=opts.midi_cc,
        channel=opts.midi_channel,
        mapping=result_mapping(result, opts),
        headroom_db=opts.midi_headroom_db,
        bpm=opts.session_bpm,
        time_signature=opts.time_signature,
        ticks_per_beat=opts.ticks_per_beat,
        offset_s=opts.stem_position_s,
        description=f"source {name}",
    )
