"""``python -m bnmusic_bridge``: the ``bnmusic`` command."""

from .frontends.cli import run

run()
