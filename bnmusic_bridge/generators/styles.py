"""Musical material for the procedural generator: styles, chords, patterns, prompt words.

Pure data plus a few parsers; no audio here. Pitches are MIDI note numbers (60 = C4 =
261.63 Hz), times are in beats or in 16th-note steps (16 per 4/4 bar).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ParameterError

_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_SHARP_MAJOR_KEYS = frozenset({7, 2, 9, 4, 11})


def note_name(pc: int, tonic_pc: int, minor: bool) -> str:
    """Name of pitch class ``pc`` spelled for the key (sharps in G, D, A, E, B major
    and their relative minors; flats otherwise, C major's borrowed chords included)."""
    relative_major = (tonic_pc + 3) % 12 if minor else tonic_pc % 12
    names = _SHARP_NAMES if relative_major in _SHARP_MAJOR_KEYS else _FLAT_NAMES
    return names[pc % 12]


MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)

CHORD_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "5": (0, 7, 12),
    "6": (0, 4, 7, 9),
    "m6": (0, 3, 7, 9),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "dom7": (0, 4, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "add9": (0, 4, 7, 14),
    "maj9": (0, 4, 7, 11, 14),
    "min9": (0, 3, 7, 10, 14),
    "dom9": (0, 4, 7, 10, 14),
}
_SYMBOL_SUFFIX = {
    "maj": "",
    "min": "m",
    "dim": "dim",
    "sus2": "sus2",
    "sus4": "sus4",
    "5": "5",
    "6": "6",
    "m6": "m6",
    "maj7": "maj7",
    "min7": "m7",
    "dom7": "7",
    "m7b5": "m7b5",
    "add9": "add9",
    "maj9": "maj9",
    "min9": "m9",
    "dom9": "9",
}
_ROMAN = {"i": 0, "ii": 1, "iii": 2, "iv": 3, "v": 4, "vi": 5, "vii": 6}


@dataclass(frozen=True)
class Chord:
    """A chord relative to the key.

    Attributes:
        degree_semitones: root, in semitones above the key's tonic (0..11).
        quality: a key of :data:`CHORD_INTERVALS`.
        numeral: the roman numeral it was written as (for diagnostics).
    """

    degree_semitones: int
    quality: str
    numeral: str

    def intervals(self) -> tuple[int, ...]:
        return CHORD_INTERVALS[self.quality]

    def symbol(self, tonic_pc: int, minor: bool = False) -> str:
        """Chord symbol in the key whose tonic is pitch class ``tonic_pc`` (e.g. "Dm7")."""
        root = note_name(tonic_pc + self.degree_semitones, tonic_pc, minor)
        return root + _SYMBOL_SUFFIX[self.quality]


def parse_numeral(text: str, minor_key: bool) -> Chord:
    """Parse a roman numeral chord such as ``"ii7"``, ``"V7"``, ``"bVII"``, ``"IVmaj7"``.

    Upper case is a major chord, lower case minor; suffixes: ``7`` (dominant 7th on a
    major numeral, minor 7th on a minor one), ``maj7``, ``9``, ``maj9``, ``add9``,
    ``sus2``, ``sus4``, ``5`` (power chord), ``6``, ``o`` (diminished), ``m7b5``.
    Scale degrees follow the key's scale (natural minor in a minor key); a ``b``/``#``
    prefix lowers/raises the root by a semitone.
    """
    m = re.fullmatch(r"([b#]?)([ivIV]+)(.*)", text)
    if m is None or m.group(2).lower() not in _ROMAN:
        raise ParameterError(f"cannot parse chord numeral {text!r}")
    accidental, roman, suffix = m.groups()
    scale = MINOR_SCALE if minor_key else MAJOR_SCALE
    root = scale[_ROMAN[roman.lower()]] + {"": 0, "b": -1, "#": 1}[accidental]
    upper = roman.isupper()
    table = {
        "": "maj" if upper else "min",
        "7": "dom7" if upper else "min7",
        "9": "dom9" if upper else "min9",
        "maj7": "maj7",
        "maj9": "maj9",
        "add9": "add9",
        "sus2": "sus2",
        "sus4": "sus4",
        "5": "5",
        "6": "6" if upper else "m6",
        "o": "dim",
        "m7b5": "m7b5",
    }
    if suffix not in table:
        raise ParameterError(f"unknown chord suffix {suffix!r} in {text!r}")
    return Chord(root % 12, table[suffix], text)


def parse_progression(text: str, minor_key: bool) -> tuple[Chord, ...]:
    """A space-separated progression of roman numerals."""
    return tuple(parse_numeral(t, minor_key) for t in text.split())


@dataclass(frozen=True)
class DrumPattern:
    """One bar of drums on a 16-step grid; ``x`` = accent, ``o`` = normal, ``g`` = ghost.

    ``ride`` doubles as the jazz ride cymbal; ``shaker`` is a soft 16th shaker.
    """

    kick: str = "." * 16
    snare: str = "." * 16
    clap: str = "." * 16
    hat: str = "." * 16
    open_hat: str = "." * 16
    ride: str = "." * 16
    shaker: str = "." * 16

    def lanes(self) -> dict[str, str]:
        return {
            "kick": self.kick,
            "snare": self.snare,
            "clap": self.clap,
            "hat": self.hat,
            "open_hat": self.open_hat,
            "ride": self.ride,
            "shaker": self.shaker,
        }


STEP_VELOCITY = {"x": 1.0, "o": 0.62, "g": 0.32}


@dataclass(frozen=True)
class Style:
    """A style: tempo, harmony, patterns and the default instrument of each role.

    Attributes:
        name: the style's name.
        tempo_bpm: tempo when the noise has no periodicity.
        tempo_range_bpm: tempos the style likes; a noise tempo is moved into it by
            octaves (x2, /2) so the beat grid stays locked to the noise.
        minor: minor key (else major).
        progressions: roman-numeral progressions, one chord per ``chord_beats``.
        chord_beats: beats each chord lasts.
        swing: 0 = straight, 1 = triplet swing of the 8th notes.
        swing_16: the same for 16th notes.
        chord_instrument, pad_instrument, bass_instrument, arp_instrument,
        lead_instrument: default instrument of each role (None = role off).
        chord_pattern: ``sustain``, ``stabs``, ``comp``, ``strum``, ``alberti``.
        chord_steps: onset steps (16th grid) for ``stabs``/``strum``.
        bass_pattern: ``pop``, ``rock``, ``offbeat``, ``sub``, ``lofi``, ``walking``,
            ``sustain``, ``classical``.
        arp_pattern: ``up8``, ``up16``, ``updown8``, ``sparse8``, or None.
        drums: main groove; None = no drums unless the prompt asks for them.
        fill: last-bar variation of a section (None = keep the groove).
        lead_density: probability of a melody note on an 8th-note slot (0..1).
        reverb_room: pedalboard room size (0..1).
        reverb_send: share of each melodic voice sent to the reverb (0..1).
        sidechain: depth of the EDM pumping on pads and chords (0..1).
        drum_tone: 0 = dark, muffled drums (lo-fi), 1 = bright.
        levels: per-role level multipliers over the generator's base balance.
        words: prompt words that select the style.
    """

    name: str
    tempo_bpm: float
    tempo_range_bpm: tuple[float, float]
    minor: bool
    progressions: tuple[str, ...]
    chord_beats: int = 4
    swing: float = 0.0
    swing_16: float = 0.0
    chord_instrument: str = "piano"
    pad_instrument: str | None = "pad"
    bass_instrument: str | None = "bass"
    arp_instrument: str | None = "pluck"
    lead_instrument: str | None = "pluck"
    chord_pattern: str = "sustain"
    chord_steps: str = "x......." * 2
    bass_pattern: str = "pop"
    arp_pattern: str | None = "up8"
    drums: DrumPattern | None = None
    fill: DrumPattern | None = None
    lead_density: float = 0.5
    reverb_room: float = 0.5
    reverb_send: float = 0.25
    sidechain: float = 0.0
    drum_tone: float = 0.8
    levels: dict[str, float] = field(default_factory=dict)
    words: tuple[str, ...] = field(default_factory=tuple)


_POP_FILL = DrumPattern(kick="x.....x.x.......", snare="....x.......xoxx", hat="x.o.x.o.x.o.....")
_ROCK_FILL = DrumPattern(kick="x.....x.x.......", snare="....x.....xxxxxx", hat="x.x.x.x.x.x.....")

STYLES: dict[str, Style] = {
    "pop": Style(
        name="pop",
        tempo_bpm=112.0,
        tempo_range_bpm=(92.0, 130.0),
        minor=False,
        progressions=("I V vi IV", "vi IV I V", "I vi IV V", "IV I V vi"),
        chord_instrument="piano",
        chord_pattern="stabs",
        chord_steps="x..x..x.x..x..x.",
        bass_pattern="pop",
        arp_pattern="up8",
        drums=DrumPattern(
            kick="x.....x.x.......", snare="....x.......x...", hat="x.o.x.o.x.o.x.o."
        ),
        fill=_POP_FILL,
        lead_instrument="bell",
        lead_density=0.55,
        reverb_room=0.45,
        reverb_send=0.2,
        words=("pop", "upbeat", "happy", "catchy", "radio"),
    ),
    "rock": Style(
        name="rock",
        tempo_bpm=124.0,
        tempo_range_bpm=(100.0, 150.0),
        minor=False,
        progressions=("I bVII IV I", "I V vi IV", "vi IV I V", "IV V I I"),
        chord_instrument="guitar",
        pad_instrument=None,
        chord_pattern="strum",
        chord_steps="x.x.x.x.x.x.x.x.",
        bass_pattern="rock",
        arp_pattern=None,
        lead_instrument="guitar",
        drums=DrumPattern(
            kick="x.....x.x.x.....",
            snare="....x.......x...",
            hat="x.x.x.x.x.x.x.x.",
        ),
        fill=_ROCK_FILL,
        lead_density=0.5,
        reverb_room=0.4,
        reverb_send=0.15,
        levels={"chords": 1.5},
        words=("rock", "punk", "metal", "grunge", "garage", "indie"),
    ),
    "edm": Style(
        name="edm",
        tempo_bpm=124.0,
        tempo_range_bpm=(118.0, 132.0),
        minor=True,
        progressions=("i VI III VII", "VI VII i i", "i iv VI VII", "VI III VII i"),
        chord_instrument="pad",
        pad_instrument=None,
        chord_pattern="sustain",
        bass_pattern="offbeat",
        arp_instrument="pluck",
        arp_pattern="up16",
        lead_instrument="bell",
        drums=DrumPattern(
            kick="x...x...x...x...",
            clap="....x.......x...",
            hat="g.g.g.g.g.g.g.g.",
            open_hat="..o...o...o...o.",
        ),
        fill=DrumPattern(
            kick="x...x...x...x...",
            clap="....x.......x.xx",
            hat="g.g.g.g.g.g.g.g.",
            open_hat="..o...o...o...o.",
        ),
        lead_density=0.5,
        reverb_room=0.6,
        reverb_send=0.3,
        sidechain=0.7,
        words=(
            "edm",
            "house",
            "techno",
            "trance",
            "dance",
            "electro",
            "electronic",
            "club",
            "synthwave",
            "dubstep",
        ),
    ),
    "hip-hop": Style(
        name="hip-hop",
        tempo_bpm=90.0,
        tempo_range_bpm=(78.0, 100.0),
        minor=True,
        progressions=("i7 VImaj7 iv7 v7", "i7 iv7 VImaj7 VII", "VImaj7 v7 i7 i7"),
        swing_16=0.35,
        chord_instrument="epiano",
        pad_instrument=None,
        chord_pattern="stabs",
        chord_steps="x......x..x.....",
        bass_pattern="sub",
        bass_instrument="sub",
        arp_pattern=None,
        lead_instrument="bell",
        drums=DrumPattern(
            kick="x......x.xx.....",
            snare="....x.......x...",
            hat="x.o.x.o.x.o.x.og",
        ),
        fill=DrumPattern(kick="x......x.xx.....", snare="....x.......x.gx", hat="x.o.x.o.x.o.xoxo"),
        lead_density=0.35,
        reverb_room=0.35,
        reverb_send=0.15,
        drum_tone=0.6,
        words=("hip-hop", "hiphop", "rap", "trap", "boom", "bap", "r&b", "rnb", "urban"),
    ),
    "lo-fi": Style(
        name="lo-fi",
        tempo_bpm=80.0,
        tempo_range_bpm=(70.0, 92.0),
        minor=False,
        progressions=(
            "ii7 V7 Imaj7 vi7",
            "IVmaj7 iii7 ii7 Imaj7",
            "Imaj7 vi7 ii7 V7",
            "IVmaj7 V7 iii7 vi7",
        ),
        swing_16=0.45,
        chord_instrument="epiano",
        pad_instrument=None,
        chord_pattern="stabs",
        chord_steps="x.........x.....",
        bass_pattern="lofi",
        arp_pattern=None,
        lead_instrument="pluck",
        drums=DrumPattern(
            kick="x.......x.x.....",
            snare="....x.......x...",
            hat="x.o.x.o.x.o.x.oo",
        ),
        fill=DrumPattern(kick="x.......x.x.....", snare="....x.......x.g.", hat="x.o.x.o.x.o.x.oo"),
        lead_density=0.35,
        reverb_room=0.5,
        reverb_send=0.25,
        drum_tone=0.25,
        words=("lo-fi", "lofi", "chill", "chillhop", "study", "mellow", "cozy", "vinyl"),
    ),
    "jazz": Style(
        name="jazz",
        tempo_bpm=132.0,
        tempo_range_bpm=(100.0, 170.0),
        minor=False,
        progressions=(
            "ii7 V7 Imaj7 Imaj7",
            "iii7 VI7 ii7 V7",
            "Imaj7 vi7 ii7 V7",
            "IVmaj7 iv7 iii7 VI7",
        ),
        swing=0.85,
        chord_instrument="piano",
        pad_instrument=None,
        chord_pattern="comp",
        bass_pattern="walking",
        bass_instrument="upright",
        arp_pattern=None,
        lead_instrument="epiano",
        drums=DrumPattern(
            kick="g...........g...",
            hat="....o.......o...",
            ride="x...x.ox....x.ox",
        ),
        lead_density=0.5,
        reverb_room=0.45,
        reverb_send=0.2,
        drum_tone=0.7,
        words=("jazz", "jazzy", "swing", "bebop", "bossa", "blues", "bluesy", "lounge"),
    ),
    "ambient": Style(
        name="ambient",
        tempo_bpm=68.0,
        tempo_range_bpm=(60.0, 84.0),
        minor=False,
        progressions=("Imaj7 IVmaj7", "vi7 IVmaj7", "Imaj9 V", "IVmaj7 Imaj7"),
        chord_beats=8,
        chord_instrument="pad",
        pad_instrument="strings",
        chord_pattern="sustain",
        bass_pattern="sustain",
        arp_instrument="bell",
        arp_pattern="sparse8",
        lead_instrument="bell",
        drums=None,
        lead_density=0.2,
        reverb_room=0.85,
        reverb_send=0.45,
        levels={"chords": 0.55, "pad": 0.55, "arp": 1.2},
        words=(
            "ambient",
            "calm",
            "drone",
            "meditation",
            "meditative",
            "relax",
            "relaxing",
            "dreamy",
            "atmospheric",
            "soundscape",
            "sleep",
            "peaceful",
        ),
    ),
    "classical": Style(
        name="classical",
        tempo_bpm=88.0,
        tempo_range_bpm=(66.0, 120.0),
        minor=False,
        progressions=("I IV V I", "I vi ii V", "I V vi iii", "IV I ii V"),
        chord_instrument="strings",
        pad_instrument=None,
        chord_pattern="sustain",
        bass_pattern="classical",
        bass_instrument="cello",
        arp_instrument="piano",
        arp_pattern="alberti",
        lead_instrument="strings",
        drums=None,
        lead_density=0.5,
        reverb_room=0.7,
        reverb_send=0.35,
        levels={"chords": 0.5, "arp": 2.5, "bass": 0.6},
        words=(
            "classical",
            "orchestra",
            "orchestral",
            "symphony",
            "symphonic",
            "baroque",
            "sonata",
            "chamber",
            "romantic",
            "cinematic",
        ),
    ),
}
DEFAULT_STYLE = "pop"

MODE_PROGRESSIONS = {
    False: ("I V vi IV", "I IV V I", "vi IV I V", "I vi IV V"),
    True: ("i VI III VII", "i iv VI V", "VI VII i i", "i VII VI VII"),
}
"""Progressions used when a ``key`` parameter asks for the other mode than the style's
(a major style's numerals do not fit a minor key)."""

INSTRUMENT_WORDS: dict[str, tuple[str, ...]] = {
    "piano": ("piano", "pianos", "grand"),
    "epiano": ("rhodes", "epiano", "e-piano", "wurlitzer", "keys", "keyboard"),
    "pad": ("pad", "pads", "synth", "synths", "synthesizer"),
    "strings": ("strings", "string", "violin", "violins", "viola", "cello", "orchestra"),
    "bass": ("bass", "bassline", "808"),
    "pluck": (
        "pluck",
        "plucks",
        "plucked",
        "plucky",
        "harp",
        "arp",
        "arpeggio",
        "arpeggios",
        "kalimba",
    ),
    "guitar": ("guitar", "guitars"),
    "bell": ("bell", "bells", "glockenspiel", "celesta", "vibraphone", "vibes", "chimes"),
    "drums": ("drum", "drums", "beat", "beats", "percussion", "groove"),
}
# Drum-kit pieces and how drums are played ask for the kit as it is (no approximation).
INSTRUMENT_WORDS["drums"] += (
    "kick", "kicks", "snare", "snares", "hihat", "hi-hat", "hats", "cymbal", "cymbals",
    "clap", "claps", "shaker", "brushes", "brushed", "punchy", "snappy", "tabla", "taiko",
    "bongos", "congas",
)  # fmt: skip


CLOSEST_TIMBRES: dict[str, str] = {
    # Voices and reeds: sustained, soft-attack, detuned: the synth pad is the closest.
    **dict.fromkeys(("choir", "choirs", "chorus", "chorale", "voice", "voices", "vocal"), "pad"),
    **dict.fromkeys(("vocals", "vox", "chant", "chants", "humming", "aahs", "ooh"), "pad"),
    **dict.fromkeys(("organ", "organs", "harmonium", "accordion", "bagpipe", "bagpipes"), "pad"),
    **dict.fromkeys(("synthesiser", "analog", "analogue"), "pad"),
    # Winds and brass: sustained with vibrato: the string voice is the closest.
    **dict.fromkeys(("flute", "flutes", "whistle", "recorder", "piccolo", "ocarina"), "strings"),
    **dict.fromkeys(("clarinet", "oboe", "bassoon", "sax", "saxophone", "saxophones"), "strings"),
    **dict.fromkeys(("brass", "horn", "horns", "trumpet", "trumpets", "trombone"), "strings"),
    **dict.fromkeys(("fiddle", "erhu", "quartet"), "strings"),
    # Plucked and struck strings.
    **dict.fromkeys(("harpsichord", "koto", "sitar", "zither", "lute", "oud"), "pluck"),
    **dict.fromkeys(("acoustic", "ukulele", "banjo", "mandolin"), "guitar"),
    # Mallets and music boxes: the FM bell.
    **dict.fromkeys(("marimba", "xylophone", "musicbox", "glass", "crystal"), "bell"),
    **dict.fromkeys(("upright", "contrabass", "double-bass", "sub"), "bass"),
}
"""Instrument words the generator has no voice for, mapped to the closest voice it
has (:data:`INSTRUMENT_WORDS`' names): named in the prompt warning as approximations."""

MOOD_STYLES: dict[str, str] = {
    **dict.fromkeys(("ethereal", "airy", "floating", "spacey", "space", "dark"), "ambient"),
    **dict.fromkeys(("eerie", "mysterious", "ominous", "haunting", "serene"), "ambient"),
    **dict.fromkeys(("tranquil", "soothing", "quiet", "slow", "evolving"), "ambient"),
    **dict.fromkeys(("energetic", "driving", "pumping", "hype", "disco", "fast"), "edm"),
    **dict.fromkeys(("aggressive", "heavy", "angry", "raw", "powerful"), "rock"),
    **dict.fromkeys(
        ("epic", "dramatic", "majestic", "elegant", "heroic", "grandiose"), "classical"
    ),
    **dict.fromkeys(("sad", "melancholy", "melancholic", "somber", "sombre", "moody"), "lo-fi"),
    **dict.fromkeys(("warm", "nostalgic", "lazy", "rainy"), "lo-fi"),
    **dict.fromkeys(("cheerful", "joyful", "bright", "sunny", "uplifting", "fun"), "pop"),
    **dict.fromkeys(("folk", "country", "playful", "hopeful"), "pop"),
    **dict.fromkeys(("funk", "funky", "soul", "groovy", "neo-soul"), "hip-hop"),
    **dict.fromkeys(("smooth", "sophisticated", "sultry", "latin", "walking"), "jazz"),
    **dict.fromkeys(("four-on-the-floor", "sidechain", "sidechained"), "edm"),
    **dict.fromkeys(("distorted", "distortion", "power", "riffs", "riff"), "rock"),
    **dict.fromkeys(("dusty", "tape", "hazy"), "lo-fi"),
}
"""Mood words and genres without a style of their own, mapped to the closest style.
A style word (:attr:`Style.words`) anywhere in the prompt wins over them."""

MODE_WORDS: dict[str, bool] = {
    **dict.fromkeys(("minor", "dark", "sad", "melancholy", "melancholic", "somber"), True),
    **dict.fromkeys(("sombre", "moody", "eerie", "mysterious", "ominous", "haunting"), True),
    **dict.fromkeys(("tense", "tragic", "gloomy"), True),
    **dict.fromkeys(("major", "happy", "cheerful", "joyful", "bright", "sunny"), False),
    **dict.fromkeys(("uplifting", "hopeful", "triumphant"), False),
}
"""Mood words that choose the key's mode (True: minor) when no ``key`` parameter does."""

_FILLER_TEXT = (
    "a an the and or with of in on for to from by at as some very but also plus into "
    "over under featuring feat like style styled music musical song songs track tracks "
    "tune tunes piece sound sounds sounding vibe vibes feel feeling mood background "
    "instrumental band trio solo sample samples bit little lots more less soft gentle "
    "light lightly subtle simple melody melodic harmony chords chord rhythm tempo"
)
FILLER_WORDS = frozenset(_FILLER_TEXT.split())
"""Words a prompt may hold that need no action (articles, "music", "track", ...): never
reported as not understood."""


def prompt_words(text: str) -> list[str]:
    """Lower-case words of a prompt, keeping ``hip-hop``, ``lo-fi``, ``r&b``, ``e-piano``
    whole and joining the spaced forms ``hip hop``, ``lo fi`` and ``four on the floor``
    (``electric piano`` reads as ``e-piano``, ``electric guitar`` as ``guitar``)."""
    lowered = text.lower().replace("hip hop", "hip-hop").replace("lo fi", "lo-fi")
    lowered = lowered.replace("electric piano", "e-piano").replace("electric guitar", "guitar")
    lowered = re.sub(r"four[\s-]+on[\s-]+the[\s-]+floor", "four-on-the-floor", lowered)
    return re.findall(r"[a-z0-9&]+(?:-[a-z0-9]+)*", lowered)


def style_from_prompt(prompt: str) -> tuple[str, str | None]:
    """The style whose word comes first in the prompt, and that word.

    Returns ``(DEFAULT_STYLE, None)`` when no style word is present.
    """
    words = prompt_words(prompt)
    for word in words:
        for name, style in STYLES.items():
            if word in style.words:
                return name, word
    for word in words:
        if word in MOOD_STYLES:
            return MOOD_STYLES[word], word
    return DEFAULT_STYLE, None


def mode_from_prompt(prompt: str) -> tuple[bool | None, str | None]:
    """The key's mode a prompt's first mood word asks for (True: minor), and that word;
    ``(None, None)`` when none does."""
    for word in prompt_words(prompt):
        if word in MODE_WORDS:
            return MODE_WORDS[word], word
    return None, None


@dataclass(frozen=True)
class PromptReading:
    """What the procedural generator understood of a prompt.

    Attributes:
        style: the chosen style; ``style_word`` the word that chose it (None: default).
        minor: the mode a mood word asks for (None: the style's); ``mode_word`` that word.
        instruments: ``(word, instrument)`` for each instrument word, in prompt order.
        closest: the subset of ``instruments`` that are approximations
            (:data:`CLOSEST_TIMBRES`: "choir" -> pad).
        unknown: words that do nothing, in prompt order, each once.
    """

    style: str
    style_word: str | None
    minor: bool | None
    mode_word: str | None
    instruments: tuple[tuple[str, str], ...]
    closest: tuple[tuple[str, str], ...]
    unknown: tuple[str, ...]


def _instrument_of() -> dict[str, str]:
    exact = {w: name for name, ws in INSTRUMENT_WORDS.items() for w in ws}
    return {**CLOSEST_TIMBRES, **exact}


def read_prompt(prompt: str) -> PromptReading:
    """Every word of ``prompt`` sorted into style, mode, instrument, filler or unknown."""
    words = prompt_words(prompt)
    style, style_word = style_from_prompt(prompt)
    minor, mode_word = mode_from_prompt(prompt)
    instrument_of = _instrument_of()
    style_words = {w for st in STYLES.values() for w in st.words}
    known = (
        (style_words | set(MOOD_STYLES) | set(MODE_WORDS) | set(instrument_of) | FILLER_WORDS)
        | _NEGATIONS
        | _CONNECTORS
    )
    instruments = tuple((w, instrument_of[w]) for w in words if w in instrument_of)
    closest = tuple(
        (w, i) for w, i in instruments if w in CLOSEST_TIMBRES and w not in _exact_words()
    )
    unknown = tuple(dict.fromkeys(w for w in words if w not in known and not w.isdigit()))
    return PromptReading(style, style_word, minor, mode_word, instruments, closest, unknown)


def _exact_words() -> set[str]:
    return {w for ws in INSTRUMENT_WORDS.values() for w in ws}


def prompt_warning(
    prompt: str, negative_prompt: str = "", *, style_from_params: bool = False
) -> str | None:
    """One warning line (starting "prompt: ") naming the words of ``prompt`` and
    ``negative_prompt`` the procedural generator does not understand and the
    approximations it made (choir -> pad), with what the understood words chose; None
    when every word was understood exactly."""
    r = read_prompt(prompt)
    neg = read_prompt(negative_prompt) if negative_prompt else None
    unknown = list(r.unknown)
    neg_unknown = [w for w in (neg.unknown if neg else ()) if w not in unknown]
    closest = list(r.closest)  # in the negative prompt they remove nothing: no voice
    if not (unknown or neg_unknown or closest):
        return None
    parts = []
    if unknown:
        parts.append(
            "the procedural generator does not understand "
            + ", ".join(repr(w) for w in unknown)
            + " (ignored)"
        )
    if neg_unknown:
        parts.append("nor, in the negative prompt, " + ", ".join(repr(w) for w in neg_unknown))
    if closest:
        parts.append("closest timbres: " + ", ".join(f"{w} -> {i}" for w, i in closest))
    if style_from_params:
        chose = "style from the style parameter"
    elif r.style_word is None:
        chose = f"style {r.style} (the default: no style or mood word)"
    else:
        chose = f"style {r.style} (from {r.style_word!r})"
    if r.mode_word is not None:
        chose += f", {'minor' if r.minor else 'major'} (from {r.mode_word!r})"
    return "prompt: " + "; ".join(parts) + f"; it used {chose}"


_NEGATIONS = frozenset({"no", "without", "minus", "sans", "except"})
_CONNECTORS = frozenset({"any", "or", "and", "nor", "a", "the", "real", "heavy", "loud"})


def instruments_in(text: str, *, closest: bool = True) -> tuple[list[str], list[str]]:
    """Instruments a prompt asks for and those it negates ("no drums", "without piano"),
    each in :data:`INSTRUMENT_WORDS` order. ``closest``: words of
    :data:`CLOSEST_TIMBRES` ask for their closest voice ("choir" -> pad); a negation
    never removes an approximation ("no vocals" keeps the pad: there are no vocals)."""
    words = prompt_words(text)
    exact = {w: name for name, ws in INSTRUMENT_WORDS.items() for w in ws}
    instrument_of = _instrument_of() if closest else exact
    asked: set[str] = set()
    negated: set[str] = set()
    negating = False
    for word in words:
        if word in _NEGATIONS:
            negating = True
        elif word in instrument_of:
            if not negating:
                asked.add(instrument_of[word])
            elif word in exact:
                negated.add(exact[word])
        elif word not in _CONNECTORS:
            # "no piano or drums" negates both; "no drums, warm piano" only the drums.
            negating = False
    order = list(INSTRUMENT_WORDS)
    return [n for n in order if n in asked], [n for n in order if n in negated]


def parse_key(text: str) -> tuple[int, bool | None]:
    """Parse ``"D"``, ``"F#m"``, ``"Bb minor"``, ``"e major"``: (tonic pitch class, minor).

    ``minor`` is None when the text gives no mode (the style decides).
    """
    m = re.fullmatch(r"\s*([A-Ga-g])([#b]?)\s*(m|min|minor|maj|major)?\s*", text)
    if m is None:
        raise ParameterError(f"key {text!r} is not a key name such as 'D', 'F#m', 'Bb minor'")
    letter, accidental, mode = m.groups()
    pc = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}[letter.lower()]
    pc = (pc + {"": 0, "#": 1, "b": -1}[accidental]) % 12
    minor = None if mode is None else mode in ("m", "min", "minor")
    return pc, minor
