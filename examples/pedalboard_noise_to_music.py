"""From a noise stem to a processed music stem, the pedalboard way (about ten lines).

    python examples/pedalboard_noise_to_music.py [NOISE] [OUT] [--force]

Writes the music with lambda and the effects applied to OUT (default
``<noise stem>.pedalboard-blended.wav`` in the current folder: not a name the CLI uses,
whose ``<stem>.music.wav`` is the unity stem), and never overwrites a file unless you
pass ``--force`` (the write is atomic: a temporary file, then a rename).

The library takes and returns pedalboard's buffers: float32 ``(channels, samples)`` plus
the sample rate, so it sits between your own chains. Music effects belong in the
request (``effects``, here the preset's ``[[effects]]``): they run before lambda is
computed, so the gain that masks the noise is computed for the music as it will sound.
A chain after ``render`` changes that level; keep it to clean-up of the noise before.
"""

import argparse
import sys
from pathlib import Path

from pedalboard import HighpassFilter, Pedalboard
from pedalboard.io import AudioFile

from bnmusic_bridge import BNMusicError, render
from bnmusic_bridge.audio import write_audio
from bnmusic_bridge.presets import load_preset

here = Path(__file__).resolve().parent
cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
cli.add_argument("noise", nargs="?", default=str(here / "noise" / "train.wav"))
cli.add_argument("out", nargs="?", help="default: <noise stem>.pedalboard-blended.wav")
cli.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
args = cli.parse_args()
out_path = Path(args.out or f"{Path(args.noise).stem}.pedalboard-blended.wav")
if out_path.exists() and not args.force:  # before the render, not after it
    sys.exit(f"{out_path} exists already; pass --force to overwrite it")

with AudioFile(args.noise) as f:
    noise, rate = f.read(f.frames), f.samplerate  # float32 (channels, samples), Hz
noise = Pedalboard([HighpassFilter(cutoff_frequency_hz=30.0)])(noise, rate)  # your pre-chain
request = load_preset("lofi-commute").request.replace(
    effects=({"type": "Chorus", "mix": 0.3}, {"type": "Reverb", "room_size": 0.4, "wet_level": 0.2})
)
result = render(noise, rate, request)  # music at the noise's rate, channels and length
try:  # float: may pass 0 dBFS on a loud noise (see result.bus_trim_db)
    write_audio(out_path, result.music_gained, rate, bit_depth=32, force=args.force)
except BNMusicError as e:
    sys.exit(str(e))

lane = result.lane_gain_db
print(f"{out_path}: coverage {result.coverage:.0%}, lambda {lane.min():+.1f}..{lane.max():+.1f} dB")
