"""One exception family for the whole package.

Every error names the thing at fault (a file, a preset key, an OSC address) so a user
can fix it without reading a traceback. Front ends catch :class:`BNMusicError` and turn
it into an exit status, an OSC ``/bnmusic/error`` reply or a batch-manifest entry.
"""

from __future__ import annotations


class BNMusicError(Exception):
    """Base class of every error this package raises on purpose.

    ``code`` is a short stable identifier (used in OSC error replies and manifests).
    """

    code = "error"


class AudioInputError(BNMusicError):
    """An input audio file is missing, unreadable, empty, too short or holds NaN/inf."""

    code = "bad_audio"


class OutputExistsError(BNMusicError):
    """An output file exists already and overwriting was not asked for (``--force``)."""

    code = "output_exists"


class OutputError(BNMusicError):
    """An output cannot be written (the folder is a file, not writable, the disk is full)."""

    code = "output_failed"


class LiveIOError(BNMusicError):
    """A live audio backend (JACK, the sound device) could not be opened or failed."""

    code = "live_io"


class ParameterError(BNMusicError):
    """A render parameter (from a preset, a flag or an OSC message) is out of range."""

    code = "bad_parameter"


class ModelNotFoundError(BNMusicError):
    """Generator weights are not on this machine; the message says how to get them."""

    code = "model_not_found"


class GeneratorError(BNMusicError):
    """A generator failed (including running out of GPU memory)."""

    code = "generator_failed"


class CancelledError(BNMusicError):
    """The render was cancelled through the progress callback."""

    code = "cancelled"


class ClusterUnreachableError(BNMusicError):
    """The Ray cluster at the given address does not answer (``--backend ray``)."""

    code = "cluster_unreachable"
