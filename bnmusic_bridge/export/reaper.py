"""The lambda lane for Reaper: a volume-envelope chunk, a track template and a project.

Files (``{stem}.lambda`` + suffix):

- ``.reaper-env.txt``: a ``<VOLENV2`` state chunk (the track's post-FX volume
  envelope) that a ReaScript applies with ``SetEnvelopeStateChunk`` on a track's
  volume envelope (``examples/reaper/``), or that can be inserted into a ``<TRACK``.
- ``.reaper-track.RTrackTemplate``: a ``<TRACK`` chunk holding the music stem as an
  ``<ITEM>`` at the stem's position and that envelope (Track > Insert track from
  template, or drag the file onto the track list).
- ``.reaper.rpp``: a minimal project for File > Open: the noise stem (the render's
  input file) on its own track, and under it the music track (the same chunk as the
  template), both items at the same position and of the same length, so they are
  sample-aligned; the lambda envelope sits on the music track. A render from an array
  (no input file) gets the music track only.

Envelope points are ``PT time value shape``: time in seconds on the project timeline,
value in Reaper's amplitude units (1.0 = 0 dB, 0.5 = -6.02 dB, 2.0 = +6.02 dB), shape 0
(linear). The chunk has no ``VOLTYPE 1`` line, so Reaper reads it as an
amplitude-scaled envelope and draws straight lines in amplitude between points (with
``VOLTYPE 1`` "fader scaling" the lines would run in fader units instead; the stored
values would still be amplitudes). The points are compacted for straight lines in
amplitude, within the tolerance of the 10 ms lane.

Reaper's volume envelope spans up to +6 dB by default (the "volume envelope range"
preference offers +12 and +24 dB). When the lane goes above
:data:`ENVELOPE_CEILING_DB`, the whole envelope is lowered by ``offset_db`` (to that
ceiling) and the item's volume raised by the same amount, so item x envelope is still
the lane; the offset is recorded in the envelope's ``<EXT`` block as
``bnmusic_offset_db`` (readable with ``GetSetEnvelopeInfo_String(env,
"P_EXT:bnmusic_offset_db", "", false)``), and a script that applies the chunk alone
must add it to the item or take volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..result import RenderResult
from .lanes import LaneOptions, check_lane, compact_lane, default_music_path, lane_points

ENVELOPE_CEILING_DB = 20.0 * math.log10(2.0)
"""+6.02 dB: the top of Reaper's volume envelope in its default range (value 2.0)."""

SOURCE_TYPES = {
    ".wav": "WAVE",
    ".aif": "WAVE",
    ".aiff": "WAVE",
    ".flac": "FLAC",
    ".mp3": "MP3",
    ".ogg": "VORBIS",
}
"""Reaper ``<SOURCE`` type by file suffix."""


@dataclass(frozen=True)
class ReaperEnvelope:
    """A compacted lane ready for Reaper.

    Attributes:
        times_s: point times on the project timeline in seconds.
        values: Reaper amplitude values (1.0 = 0 dB) after the offset.
        offset_db: dB taken off every point (and put on the item volume) so the
            envelope stays within Reaper's default +6 dB range; 0 when it fits.
    """

    times_s: np.ndarray
    values: np.ndarray
    offset_db: float


def reaper_envelope(
    times_s: np.ndarray,
    gain_db: np.ndarray,
    *,
    tolerance_db: float = 0.1,
    position_s: float = 0.0,
    ceiling_db: float = ENVELOPE_CEILING_DB,
) -> ReaperEnvelope:
    """Compact the lane for straight lines in amplitude, shift it to ``position_s`` and
    lower it by the offset that keeps its top at or under ``ceiling_db``."""
    t = np.asarray(times_s, dtype=np.float64)
    g = np.asarray(gain_db, dtype=np.float64)
    check_lane(t, g)
    ct, cg = compact_lane(t, g, tolerance_db, interpolation="linear")
    top = float(cg.max())
    # Offsets round up to 0.01 dB so a user can type the item volume exactly.
    offset_db = math.ceil((top - ceiling_db) * 100.0) / 100.0 if top > ceiling_db else 0.0
    return ReaperEnvelope(
        times_s=ct + position_s, values=np.power(10.0, (cg - offset_db) / 20.0), offset_db=offset_db
    )


def _quote(text: str) -> str:
    # Reaper chunk strings: double quotes unless the text holds one, then single
    # quotes, then backticks (a name holding all three loses its backticks, as in
    # Reaper's own files). Any other character (en dash, CJK, emoji, spaces,
    # parentheses) goes through as it is: the chunk is UTF-8, as Reaper writes it.
    for q in ('"', "'", "`"):
        if q not in text:
            return f"{q}{text}{q}"
    return "`" + text.replace("`", "'") + "`"


def _quote_path(path: Path) -> str:
    # A file path must survive exactly, or Reaper opens the project with the item
    # offline; a path holding all three quote characters cannot be written.
    text = str(path)
    if all(q in text for q in ('"', "'", "`")):
        raise ParameterError(
            f"music stem {path}: a Reaper chunk cannot hold a path with all three quote "
            "characters (\", ', `); rename the file or leave 'reaper' out of --lane"
        )
    return _quote(text)


def volume_envelope_chunk(env: ReaperEnvelope, *, tag: str = "VOLENV2", indent: str = "") -> str:
    """The ``<VOLENV2 ...>`` chunk text (``tag`` "VOLENV" for the pre-FX volume envelope)."""
    if tag not in ("VOLENV", "VOLENV2"):
        raise ParameterError(
            f"envelope tag {tag!r}: use VOLENV2 (post-FX track volume) or VOLENV (pre-FX)"
        )
    i2 = indent + "  "
    lines = [
        f"{indent}<{tag}",
        f"{i2}ACT 1 -1",
        f"{i2}VIS 1 1 1",
        f"{i2}LANEHEIGHT 0 0",
        f"{i2}ARM 0",
        f"{i2}DEFSHAPE 0 -1 -1",
        f"{i2}<EXT",
        f"{i2}  bnmusic_offset_db {env.offset_db:.2f}",
        f"{i2}>",
    ]
    lines += [
        f"{i2}PT {t:.6f} {v:.10g} 0"
        for t, v in zip(env.times_s.tolist(), env.values.tolist(), strict=True)
    ]
    lines.append(f"{indent}>")
    return "\n".join(lines) + "\n"


def _source_type(path: Path, what: str) -> str:
    source = SOURCE_TYPES.get(path.suffix.lower())
    if source is None:
        raise ParameterError(
            f"{what} {path}: Reaper source type unknown for {path.suffix!r}; use one of {sorted(SOURCE_TYPES)}"
        )
    return source


def _track_channels(channels: int) -> int:
    # Reaper tracks have an even channel count (2 to 128); a 5.1 item needs 6.
    return max(2, channels + (channels & 1))


def track_chunk(
    env: ReaperEnvelope | None,
    *,
    music_path: str | Path,
    length_s: float,
    position_s: float = 0.0,
    name: str = "bnmusic music",
    notes: str = "",
    channels: int = 2,
) -> str:
    """A ``<TRACK`` chunk: the music stem as one item at ``position_s`` (seconds) of
    ``length_s`` seconds, with the volume envelope; the item volume carries
    ``env.offset_db``. ``env`` None: a plain track (no envelope) holding the file, as
    the noise track of a project. ``channels``: the file's channel count (the track
    gets at least as many, rounded up to even)."""
    if not length_s > 0:
        raise ParameterError(f"item length_s={length_s} must be positive (seconds)")
    path = Path(music_path)
    source = _source_type(path, "music stem" if env is not None else "noise stem")
    item_volume = 10.0 ** (env.offset_db / 20.0) if env is not None else 1.0
    lines = [
        "<TRACK",
        f"  NAME {_quote(name)}",
        "  VOLPAN 1 0 -1 -1 1",
        "  MUTESOLO 0 0 0",
        f"  NCHAN {_track_channels(channels)}",
    ]
    if env is not None:
        lines.append(volume_envelope_chunk(env, indent="  ").rstrip("\n"))
    lines += [
        "  <ITEM",
        f"    POSITION {position_s:.6f}",
        f"    LENGTH {length_s:.6f}",
        "    LOOP 0",
        f"    NAME {_quote(path.name)}",
        f"    VOLPAN {item_volume:.10g} 0 1 -1",
        "    SOFFS 0",
    ]
    if notes:
        lines.append("    <NOTES")
        lines += [f"      |{line}" for line in notes.splitlines()]
        lines.append("    >")
    lines += [
        f"    <SOURCE {source}",
        f"      FILE {_quote_path(path)}",
        "    >",
        "  >",
        ">",
    ]
    return "\n".join(lines) + "\n"


def project_rpp(
    track: str, *, sample_rate_hz: int, bpm: float = 120.0, time_signature: tuple[int, int] = (4, 4)
) -> str:
    """A minimal Reaper project holding ``track`` (one or more ``<TRACK`` chunks, top to
    bottom), openable with File > Open; Reaper fills every setting not given with its
    defaults."""
    num, den = time_signature
    body = "".join(f"  {line}\n" for line in track.rstrip("\n").splitlines())
    return (
        '<REAPER_PROJECT 0.1 "6.0" 0\n'
        f"  TEMPO {bpm:g} {num} {den}\n"
        f"  SAMPLERATE {int(sample_rate_hz)} 0 0\n"
        f"{body}"
        ">\n"
    )


def result_reaper_files(
    result: RenderResult,
    options: LaneOptions | None = None,
    *,
    music_path: str | Path | None = None,
) -> dict[str, bytes]:
    """The three Reaper files of a render, keyed "reaper-env", "reaper-track",
    "reaper-project". ``music_path`` is the music stem's file (made absolute, so the
    track finds it from any project folder); default ``<stem>.music.wav`` beside the
    input."""
    opts = options or LaneOptions()
    times_s, gain_db = lane_points(result)
    env = reaper_envelope(
        times_s, gain_db, tolerance_db=opts.tolerance_db, position_s=opts.stem_position_s
    )
    music = Path(music_path) if music_path is not None else default_music_path(result)
    music = music.resolve()
    length_s = result.num_samples / result.sample_rate_hz
    notes = (
        f"bnmusic-bridge lambda lane for {music.name}: {gain_db.min():+.2f} to {gain_db.max():+.2f} dB "
        f"relative to the unity music stem; {env.times_s.size} envelope points within "
        f"{opts.tolerance_db:g} dB of the 10 ms lane."
    )
    if env.offset_db > 0:
        notes += (
            f"\nThe envelope is lowered by {env.offset_db:.2f} dB to fit Reaper's +6 dB envelope range; "
            f"this item's volume is raised by {env.offset_db:.2f} dB to match."
        )
    track = track_chunk(
        env,
        music_path=music,
        length_s=length_s,
        position_s=opts.stem_position_s,
        name=f"{music.stem} (lambda)",
        notes=notes,
        channels=result.num_channels,
    )
    tracks = track
    noise = result.source
    if noise is not None and noise.suffix.lower() in SOURCE_TYPES:
        # The noise on its own track, the music under it: same position, same length
        # (every output has the input's length in samples), so sample-aligned.
        noise = noise.resolve()
        noise_channels = _file_channels(noise, default=result.num_channels)
        tracks = (
            track_chunk(
                None,
                music_path=noise,
                length_s=length_s,
                position_s=opts.stem_position_s,
                name=noise.stem,
                channels=noise_channels,
            )
            + track
        )
    return {
        "reaper-env": volume_envelope_chunk(env).encode("utf-8"),
        "reaper-track": track.encode("utf-8"),
        "reaper-project": project_rpp(
            tracks,
            sample_rate_hz=result.sample_rate_hz,
            bpm=opts.session_bpm,
            time_signature=opts.time_signature,
        ).encode("utf-8"),
    }


def _file_channels(path: Path, *, default: int) -> int:
    """The channel count of an audio file (its header), or ``default`` when unreadable."""
    try:
        import soundfile

        return int(soundfile.info(str(path)).channels)
    except Exception:
        return default
