"""Command line: ``streamd run | check`` and ``streamd --version``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import tomli_w

from streamd import __version__
from streamd.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from streamd.observability import configure_logging

EXIT_CONFIG = 78


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamd", description="camera-streaming daemon")
    parser.add_argument("--version", action="version", version=f"streamd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon (supervisor, cameras, gateway)")
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG_PATH)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate a config and print it with secrets redacted")
    check.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG_PATH)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(f"streamd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check":
        sys.stdout.write(tomli_w.dumps(config.redacted()))
        return 0
    configure_logging(args.log_level or config.log_level)
    from streamd.daemon import run_daemon  # keeps `check` free of the heavy imports

    return asyncio.run(run_daemon(config, args.config))
