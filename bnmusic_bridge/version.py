"""The package version: one home, read by ``pyproject.toml`` (statically, nothing
imported), the report, the CLI and the OSC server."""

__version__ = "0.1.0"
