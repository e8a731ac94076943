"""``bnmusic presets list | show NAME | validate FILE... | save FILE``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bnmusic_bridge.errors import BNMusicError, ParameterError
from bnmusic_bridge.frontends.args import (
    EXIT_ERROR,
    EXIT_OK,
    add_format_args,
    add_render_args,
    build_export_options,
    build_request,
)
from bnmusic_bridge.request import expand_path


def register(subparsers: Any) -> None:
    """Add the ``presets`` command to the ``bnmusic`` parser."""
    p = subparsers.add_parser(
        "presets",
        help="list, show, validate and save presets",
        description="Presets are TOML files of render parameters (see docs/presets.md). "
        "User folders (--presets-dir, then $BNMUSIC_PRESETS_DIR) override shipped presets "
        "of the same name.",
    )
    sub = p.add_subparsers(dest="presets_command", required=True)

    q = sub.add_parser("list", help="every preset by name, with where it comes from")
    q.add_argument("--presets-dir", type=expand_path, help="folder of user presets")
    q.add_argument("--json", action="store_true", help="print the list as JSON")
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("show", help="print a preset as complete TOML (every field)")
    q.add_argument("name", help="preset name or .toml file")
    q.add_argument("--presets-dir", type=expand_path, help="folder of user presets")
    q.set_defaults(func=cmd_show)

    q = sub.add_parser("validate", help="check preset files; exit 1 if any is invalid")
    q.add_argument("files", nargs="+", help=".toml preset files (or preset names)")
    q.add_argument("--presets-dir", type=expand_path, help="folder of user presets (for names)")
    q.add_argument(
        "--load-plugins",
        action="store_true",
        help="also load external VST3/AU plugins to check their parameter names",
    )
    q.set_defaults(func=cmd_validate)

    q = sub.add_parser(
        "save",
        help="save a preset (optionally starting from --preset) with flags applied",
        description="Write a complete preset file: --preset (if given) first, then every "
        "render flag. The file name must be <name>.toml.",
    )
    q.add_argument(
        "file",
        help="NAME or NAME.toml: saved in the user presets folder (--presets-dir, else the "
        "first folder of $BNMUSIC_PRESETS_DIR, else ~/.config/bnmusic/presets), where "
        "--preset NAME finds it; a path with a folder (./NAME.toml) is saved there",
    )
    q.add_argument("--description", help="description to store (default: the base preset's)")
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_format_args(q)
    add_render_args(q)
    q.set_defaults(func=cmd_save)


def cmd_list(args: argparse.Namespace) -> int:
    from bnmusic_bridge.presets import list_presets

    entries = list_presets(args.presets_dir)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": e.name,
                        "origin": e.origin,
                        "path": str(e.path),
                        "overrides": str(e.overrides) if e.overrides else None,
                        "description": e.description,
                        "error": e.error,
                    }
                    for e in entries
                ],
                indent=1,
            )
        )
        return EXIT_OK
    if not entries:
        print("no presets found", file=sys.stderr)
        return EXIT_ERROR
    width = max(len(e.name) for e in entries)
    for e in entries:
        origin = e.origin + (" (overrides shipped)" if e.overrides else "")
        text = f"INVALID: {e.error}" if e.error else e.description
        print(f"{e.name:{width}s}  {origin:28s} {text}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from bnmusic_bridge.presets import dumps_preset, load_preset

    preset = load_preset(args.name, presets_dir=args.presets_dir)
    print(f"# {preset.path}")
    print(dumps_preset(preset), end="")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from bnmusic_bridge.fx import check_effects
    from bnmusic_bridge.presets import load_preset

    failures = 0
    for path in args.files:
        try:
            preset = load_preset(path, presets_dir=args.presets_dir)
            if args.load_plugins:
                check_effects(preset.request.effects, where=f"{path}: effects", load_plugins=True)
        except BNMusicError as e:
            failures += 1
            print(f"invalid: {e}", file=sys.stderr)
            continue
        print(f"ok: {preset.path} ({preset.name})")
    return EXIT_ERROR if failures else EXIT_OK


def save_target(file: str, presets_dir: Path | None) -> Path:
    """Where ``bnmusic presets save FILE`` writes: a bare ``NAME`` or ``NAME.toml`` goes
    into the first user presets folder (so ``--preset NAME`` finds it), a path with a
    folder part where it says."""
    from bnmusic_bridge.presets import user_presets_dirs

    if os.path.dirname(file):
        return expand_path(file)
    name = file if file.endswith(".toml") else f"{file}.toml"
    return user_presets_dirs(presets_dir)[0] / name


def cmd_save(args: argparse.Namespace) -> int:
    from bnmusic_bridge.presets import load_preset, make_preset, save_preset, user_presets_dirs

    base = load_preset(args.preset, presets_dir=args.presets_dir) if args.preset else None
    request = build_request(args)
    # --force means "overwrite the file" here, not an export option to store.
    force, args.force = args.force, False
    export = build_export_options(args, base.export if base else None)
    target = save_target(args.file, args.presets_dir)
    name = target.stem
    description = (
        args.description if args.description is not None else (base.description if base else "")
    )
    try:
        preset = make_preset(name, request, export, description)
    except ParameterError as e:
        raise ParameterError(f"{target}: {e}") from e
    written = save_preset(preset, target, force=force)
    folders = [os.path.realpath(d) for d in user_presets_dirs(args.presets_dir)]
    if os.path.realpath(written.parent) in folders:
        print(f"saved {written}; --preset {name} finds it")
    else:
        print(
            f"saved {written}; --preset {name} does not look in {written.parent}: use "
            f"--preset {written}, or --presets-dir {written.parent} (or add it to "
            "$BNMUSIC_PRESETS_DIR)"
        )
    return EXIT_OK
