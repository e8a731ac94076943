"""Channel layouts: which speaker each channel of a stem feeds, and where the music goes.

A WAV file with a ``WAVE_FORMAT_EXTENSIBLE`` header says its layout in a channel mask
(one bit per speaker, channels in the order of the bits: :data:`SPEAKERS`); it is read
here by a plain RIFF/RF64 parser (:func:`wav_channel_mask`). Other files, and WAVs
without a mask, get the usual layout for their channel count (:data:`DEFAULT_MASKS`,
the WAV/SMPTE order: 5.1 is L R C LFE Ls Rs).

The music goes on the front pair (front left and right), never on the LFE; the centre
and the surrounds stay silent, so dialogue and effects placed there keep their space
and the music stem drops into the stem's own track with the same channel count. A
layout without a front pair gets it on the next left/right pair it has (front centre
pair, side, back, top front: :data:`MUSIC_PAIRS`), else on its first two channels that
are neither LFE nor centre (the mono sum where there is one such channel, or only a
centre).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

SPEAKERS: tuple[str, ...] = (
    "FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR",
    "TC", "TFL", "TFC", "TFR", "TBL", "TBC", "TBR",
)  # fmt: skip
"""Speaker names of the WAV channel-mask bits, bit 0 first (Microsoft's
``SPEAKER_FRONT_LEFT`` ... ``SPEAKER_TOP_BACK_RIGHT``)."""

DEFAULT_MASKS: dict[int, int] = {
    1: 0x4,  # mono: front centre
    2: 0x3,  # stereo: FL FR
    3: 0x7,  # FL FR FC
    4: 0x33,  # quad: FL FR BL BR
    5: 0x607,  # 5.0: FL FR FC SL SR
    6: 0x60F,  # 5.1: FL FR FC LFE SL SR (L R C LFE Ls Rs)
    7: 0x70F,  # 6.1: FL FR FC LFE BC SL SR
    8: 0x63F,  # 7.1: FL FR FC LFE BL BR SL SR
}
"""The layout assumed for a stem without a channel mask, by channel count."""

_EXTENSIBLE = 0xFFFE


def speakers_of(mask: int, num_channels: int) -> tuple[str, ...]:
    """Speaker names of ``num_channels`` channels under ``mask`` (bits in order).

    Channels beyond the mask's set bits (a mask may name fewer speakers than there are
    channels) are named ``"-"``: not mapped to any speaker.
    """
    names = [SPEAKERS[b] for b in range(len(SPEAKERS)) if mask >> b & 1]
    names = names[:num_channels]
    return tuple(names + ["-"] * (num_channels - len(names)))


def default_speakers(num_channels: int) -> tuple[str, ...]:
    """The usual layout of a stem of ``num_channels`` channels (:data:`DEFAULT_MASKS`)."""
    mask = DEFAULT_MASKS.get(num_channels)
    if mask is None:
        return tuple(["FL", "FR"][:num_channels] + ["-"] * max(0, num_channels - 2))
    return speakers_of(mask, num_channels)


def _fmt_chunk(f: BinaryIO) -> tuple[int, bytes] | None:
    """Offset and first bytes (up to 40) of a RIFF/RF64 WAVE file's ``fmt `` chunk data."""
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return None
    for _ in range(64):  # chunks before fmt: at most a few (JUNK, ds64, bext)
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            return f.tell(), f.read(min(size, 40))
        f.seek(size + (size & 1), os.SEEK_CUR)
    return None


def wav_channel_mask(path: str | os.PathLike[str]) -> int | None:
    """The channel mask of a ``WAVE_FORMAT_EXTENSIBLE`` WAV (or RF64) file.

    Returns None for other files, for WAVs with a plain ``fmt `` chunk, and for a
    mask of 0 (which means "no speaker assignment"). Reads the chunk headers only.
    """
    try:
        with Path(path).open("rb") as f:
            found = _fmt_chunk(f)
    except OSError:
        return None
    if found is None:
        return None
    fmt = found[1]
    if len(fmt) < 24 or struct.unpack("<H", fmt[:2])[0] != _EXTENSIBLE:
        return None
    return int(struct.unpack("<I", fmt[20:24])[0]) or None


def set_wav_channel_mask(f: BinaryIO, mask: int) -> bool:
    """Write ``mask`` into an open, seekable ``WAVE_FORMAT_EXTENSIBLE`` file's header.

    Returns False (and changes nothing) when the file has no extensible ``fmt `` chunk
    or the mask names fewer speakers than the file has channels.
    """
    found = _fmt_chunk(f)
    if found is None:
        return False
    offset, fmt = found
    if len(fmt) < 24 or struct.unpack("<H", fmt[:2])[0] != _EXTENSIBLE:
        return False
    channels = struct.unpack("<H", fmt[2:4])[0]
    if bin(mask).count("1") < channels:
        return False
    f.seek(offset + 20)
    f.write(struct.pack("<I", mask))
    f.seek(0, os.SEEK_END)
    return True


def mask_of(speakers: tuple[str, ...]) -> int:
    """The WAV channel mask naming ``speakers`` (unknown names, ``"-"``, add no bit)."""
    return sum(1 << SPEAKERS.index(s) for s in speakers if s in SPEAKERS)


def stem_speakers(num_channels: int, mask: int | None) -> tuple[str, ...]:
    """The stem's speakers: from its mask when it has one with enough bits, else the
    default layout for its channel count."""
    if mask is not None and bin(mask).count("1") >= num_channels:
        return speakers_of(mask, num_channels)
    return default_speakers(num_channels)


MUSIC_PAIRS = (("FL", "FR"), ("FLC", "FRC"), ("SL", "SR"), ("BL", "BR"), ("TFL", "TFR"))
"""Left/right speaker pairs that can carry the music, in order of preference."""


def music_channels(speakers: tuple[str, ...]) -> tuple[int, int] | tuple[int]:
    """Indices of the channels that carry the music: the first pair of
    :data:`MUSIC_PAIRS` the layout has (the front pair, normally); else the first two
    channels that are neither LFE nor centre (then any non-LFE ones); a one-channel
    layout carries it on its only channel."""
    if len(speakers) == 1:
        return (0,)
    for left, right in MUSIC_PAIRS:
        if left in speakers and right in speakers:
            return speakers.index(left), speakers.index(right)
    others = [i for i, s in enumerate(speakers) if s not in ("LFE", "FC")]
    if len(others) == 1:
        return (others[0],)  # one such channel: the mono sum there
    if not others:
        others = [i for i, s in enumerate(speakers) if s != "LFE"]
    if len(others) >= 2:
        return others[0], others[1]
    return (others[0],) if others else (0,)


def place_music(music: np.ndarray, speakers: tuple[str, ...]) -> np.ndarray:
    """Put 1- or 2-channel music on a layout's music channels (:func:`music_channels`);
    every other channel (centre, LFE, surrounds) is silent.

    Args:
        music: float ``(1 or 2, samples)``.
        speakers: the output's speakers (:func:`stem_speakers`).

    Returns:
        float32 ``(len(speakers), samples)``.
    """
    x = np.asarray(music, dtype=np.float32)
    n = len(speakers)
    out = np.zeros((n, x.shape[1]), dtype=np.float32)
    targets = music_channels(speakers)
    if len(targets) == 1:
        out[targets[0]] = x.mean(axis=0)
    else:
        out[targets[0]] = x[0]
        out[targets[1]] = x[-1]
    return out
