"""``python -m bnmusic_bridge``: the ``bnmusic`` command."""

from .cli import main

raise SystemExit(main())
