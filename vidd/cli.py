"""The `vidd` command: `serve` runs the daemon; `check-config` checks a config file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vidd", description="A video conversion daemon.")
    parser.add_argument("--version", action="version", version=f"vidd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", default="config.toml", help="path to config.toml")
    serve.add_argument("--verbose", action="store_true", help="log debug output")
    check = sub.add_parser("check-config", help="check a config file and exit")
    check.add_argument("--config", default="config.toml", help="path to config.toml")
    args = parser.parse_args(argv)

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        print(f"vidd: {e}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{cfg.path}: ok")
        return 0
    from . import daemon

    return daemon.serve(cfg, verbose=args.verbose)
