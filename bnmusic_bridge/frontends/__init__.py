"""Front ends: the ``bnmusic`` command and its subcommands, and the OSC server.

Each front end builds a :class:`~bnmusic_bridge.RenderRequest` and calls the library's
one pipeline entry point. Rules (checked by ``tests/test_layout.py``):

- the library (every ``bnmusic_bridge`` module outside this package) never imports a
  front end;
- front ends use the library's public names only (nothing starting with ``_``).
"""
