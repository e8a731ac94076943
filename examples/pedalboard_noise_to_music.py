"""From a noise stem to a processed music stem, the pedalboard way (about ten lines).

    python examples/pedalboard_noise_to_music.py [NOISE] [OUT]

The library takes and returns pedalboard's buffers: float32 ``(channels, samples)`` plus
the sample rate, so it sits between your own chains. Music effects belong in the
request (``effects``, here the preset's ``[[effects]]``): they run before lambda is
computed, so the gain that masks the noise is computed for the music as it will sound.
A chain after ``render`` changes that level; keep it to clean-up of the noise before.
"""

import sys
from pathlib import Path

from pedalboard import HighpassFilter, Pedalboard
from pedalboard.io import AudioFile

from bnmusic_bridge import render
from bnmusic_bridge.presets import load_preset

here = Path(__file__).resolve().parent
noise_path = sys.argv[1] if len(sys.argv) > 1 else str(here / "noise" / "train.wav")
out_path = sys.argv[2] if len(sys.argv) > 2 else "train.music.wav"

with AudioFile(noise_path) as f:
    noise, rate = f.read(f.frames), f.samplerate  # float32 (channels, samples), Hz
noise = Pedalboard([HighpassFilter(cutoff_frequency_hz=30.0)])(noise, rate)  # your pre-chain
request = load_preset("lofi-commute").request.replace(
    effects=({"type": "Chorus", "mix": 0.3}, {"type": "Reverb", "room_size": 0.4, "wet_level": 0.2})
)
result = render(noise, rate, request)  # music at the noise's rate, channels and length
with AudioFile(out_path, "w", rate, result.music_gained.shape[0], bit_depth=32) as f:
    f.write(result.music_gained)  # float: may pass 0 dBFS on a loud noise (see result.bus_trim_db)

lane = result.lane_gain_db
print(f"{out_path}: coverage {result.coverage:.0%}, lambda {lane.min():+.1f}..{lane.max():+.1f} dB")
