"""Command line: ``streamd run | check | init | camera add/remove/list | status |
install/uninstall --systemd``.

The hand-edited main file is never rewritten (``tomli-w`` would drop its
comments); ``streamd camera`` manages one drop-in file per camera instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w

from streamd import __version__, install
from streamd.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    default_dropin_dir,
    is_valid_camera_id,
    load_config,
    parse_camera,
)
from streamd.errors import CliError
from streamd.observability import configure_logging
from streamd.redact import redact_url
from streamd.starter import STARTER_CONFIG, atomic_write
from streamd.states import ExitCode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamd", description="camera-streaming daemon")
    parser.add_argument("--version", action="version", version=f"streamd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG_PATH)
        return p

    run = with_config(sub.add_parser("run", help="run the daemon (supervisor, cameras, gateway)"))
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    with_config(sub.add_parser("check", help="validate the config; print it with secrets masked"))
    init = with_config(sub.add_parser("init", help="write a starter config"))
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    status = with_config(sub.add_parser("status", help="cameras of the running daemon"))
    status.add_argument("--json", action="store_true")

    camera = sub.add_parser("camera", help="manage cameras as drop-in files")
    cam_sub = camera.add_subparsers(dest="camera_command", required=True)
    add = with_config(cam_sub.add_parser("add", help="add a camera (one drop-in file)"))
    add.add_argument("id")
    add.add_argument("source")
    add.add_argument("--fps", type=float)
    add.add_argument("--width", type=int)
    add.add_argument("--jpeg-quality", type=int)
    add.add_argument("--username")
    add.add_argument("--password-file")
    add.add_argument("--password-credential")
    add.add_argument("--reload", action="store_true", help="ask the running daemon to reload")
    remove = with_config(cam_sub.add_parser("remove", help="remove a camera added with add"))
    remove.add_argument("id")
    remove.add_argument("--reload", action="store_true")
    with_config(cam_sub.add_parser("list", help="list configured cameras"))

    for name, verb in (("install", "install"), ("uninstall", "remove")):
        target = with_config(sub.add_parser(name, help=f"{verb} the systemd service"))
        target.add_argument("--systemd", action="store_true", required=True, help="as a unit")
        target.add_argument("--dry-run", action="store_true", help="print the steps only")
        if name == "install":
            target.add_argument("--enable", action="store_true", help="enable --now the unit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            return _init(args.config, args.force)
        if args.command == "camera":
            return _camera(args)
        if args.command in ("install", "uninstall"):
            if args.command == "install":
                return install.install_systemd(args.config, args.enable, args.dry_run)
            return install.uninstall_systemd(args.config, args.dry_run)
        config = load_config(args.config, os.environ)
        if args.command == "check":
            sys.stdout.write(tomli_w.dumps(config.redacted()))
            return 0
        if args.command == "status":
            return _status(config, args.json)
    except ConfigError as exc:
        print(f"streamd: config error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except CliError as exc:
        print(f"streamd: {exc}", file=sys.stderr)
        return exc.code
    configure_logging(args.log_level or config.log_level)
    from streamd.daemon import run_daemon  # keeps the other commands free of heavy imports

    return asyncio.run(run_daemon(config, args.config))


# --- init and camera ------------------------------------------------------------------


def _init(path: Path, force: bool) -> int:
    if path.exists() and not force:
        raise CliError(f"{path} exists; not overwriting it (use --force)")
    dropins = default_dropin_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dropins.mkdir(parents=True, exist_ok=True)
    atomic_write(path, STARTER_CONFIG.format(path=path, dropins=dropins))
    print(f"wrote {path}; drop-in directory {dropins}")
    return 0


def _camera(args: argparse.Namespace) -> int:
    config_path: Path = args.config
    dropins = default_dropin_dir(config_path)
    if args.camera_command == "list":
        config = load_config(config_path, os.environ)
        origin = dict(config.origins)
        for camera in config.cameras:
            print(
                f"{camera.id}\t{redact_url(camera.source)}\t{camera.fps:g} fps\t{origin[camera.id]}"
            )
        return 0
    if not is_valid_camera_id(args.id):
        raise CliError(f"{args.id!r} is not a valid camera id", ExitCode.USAGE)
    config = load_config(config_path, os.environ)
    target = dropins / f"{args.id}.toml"
    if args.camera_command == "add":
        if config.camera(args.id) is not None:
            where = dict(config.origins)[args.id]
            raise CliError(f"camera {args.id!r} already exists (in {where})", ExitCode.USAGE)
        table: dict[str, Any] = {"id": args.id, "source": args.source}
        for key, value in (
            ("fps", args.fps),
            ("width", args.width),
            ("jpeg_quality", args.jpeg_quality),
            ("username", args.username),
            ("password_file", args.password_file),
            ("password_credential", args.password_credential),
        ):
            if value is not None:
                table[key] = value
        parse_camera(str(target), 0, table, os.environ)  # valid by construction, or refused
        dropins.mkdir(parents=True, exist_ok=True)
        atomic_write(target, tomli_w.dumps({"cameras": [table]}))
        try:
            load_config(config_path, os.environ)
        except ConfigError:
            target.unlink(missing_ok=True)
            raise
        print(f"added camera {args.id} in {target}")
    else:
        if config.camera(args.id) is None:
            raise CliError(f"no camera {args.id!r}", ExitCode.USAGE)
        if not target.exists():
            where = dict(config.origins)[args.id]
            raise CliError(
                f"camera {args.id!r} is defined in {where}; edit that file", ExitCode.USAGE
            )
        target.unlink()
        print(f"removed camera {args.id} ({target})")
    if args.reload:
        return _request_reload(load_config(config_path, os.environ))
    return 0


# --- talking to the running daemon -------------------------------------------------------


def _daemon_url(config: Config, path: str) -> str:
    host = config.server.host
    if host in ("0.0.0.0", ""):  # noqa: S104 - connecting, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}{path}"


def _call(config: Config, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(_daemon_url(config, path), method=method)  # noqa: S310
    if method == "POST":  # control needs a JSON content type (the daemon's CSRF guard)
        request.add_header("Content-Type", "application/json")
    token = os.environ.get("STREAMD_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise CliError(f"daemon answered {exc.code}: {detail}", ExitCode.UNAVAILABLE) from None
    except OSError as exc:
        raise CliError(
            f"cannot reach the daemon at {config.server.listen}: {exc}", ExitCode.UNAVAILABLE
        ) from None


def _request_reload(config: Config) -> int:
    result = _call(config, "/api/v1/reload", method="POST")
    print(f"daemon reloaded: {result.get('detail')}")
    return 0


def _status(config: Config, as_json: bool) -> int:
    answer = _call(config, "/api/cameras")
    cameras: dict[str, dict[str, Any]] = answer["cameras"]
    if as_json:
        print(json.dumps(cameras, indent=2, sort_keys=True))
        return 0
    fork_server = answer.get("fork_server")
    columns = (
        "camera",
        "state",
        "pid",
        "start",
        "redis",
        "viewers",
        "restarts",
        "age_s",
        "success%",
        "fps",
        "p50_ms",
        "last_error",
    )
    keys = (
        "state",
        "pid",
        "started_by",
        "redis",
        "viewers",
        "restarts",
        "last_frame_age_s",
        "success_rate_pct",
        "fps_out",
        "publish_p50_ms",
        "last_error",
    )

    def cell(value: Any) -> str:
        return "-" if value is None or value == "" else str(value)

    rows = [(cid, *(cell(c.get(k)) for k in keys)) for cid, c in sorted(cameras.items())]
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if isinstance(fork_server, dict):
        print(fork_server_line(fork_server))
    return 0


def fork_server_line(info: dict[str, Any]) -> str:
    """``streamd status``'s last line: the warm fork server and how children started."""
    return (
        f"fork server: {info.get('state')} (pid {info.get('pid') or '-'}, "
        f"restarts {info.get('restarts', 0)}); children forked {info.get('children_forked', 0)}, "
        f"spawned {info.get('children_spawned', 0)} "
        f"(of which while it was down: {info.get('spawn_fallbacks', 0)})"
    )
