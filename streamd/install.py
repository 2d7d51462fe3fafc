"""``streamd install --systemd`` / ``streamd uninstall --systemd``.

Planning is pure: :func:`plan_install` and :func:`plan_uninstall` turn facts
about the machine (which streamd runs, does the config exist) into a list of
steps. ``--dry-run`` prints the steps; a real run prints and applies each in
order, stopping at the first failure.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamd.config import default_dropin_dir
from streamd.errors import CliError
from streamd.starter import STARTER_CONFIG, atomic_write
from streamd.states import ExitCode

UNIT_NAME = "streamd.service"
UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class WriteFile:
    path: Path
    text: str
    what: str
    mode: int = 0o644

    def describe(self) -> str:
        return f"write {self.path} ({self.what})"


@dataclass(frozen=True)
class MakeDir:
    path: Path

    def describe(self) -> str:
        return f"create directory {self.path}"


@dataclass(frozen=True)
class RemoveFile:
    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]

    def describe(self) -> str:
        return f"run {shlex.join(self.argv)}"


@dataclass(frozen=True)
class Keep:
    """Nothing to do; said out loud so the user knows it was considered."""

    path: Path
    why: str

    def describe(self) -> str:
        return f"{self.path}: {self.why}"


Step = WriteFile | MakeDir | RemoveFile | Run | Keep


# --- pure planning ---------------------------------------------------------------------


def unit_quote(word: str) -> str:
    """One ExecStart= word: ``%`` is a specifier, spaces and quotes need quoting."""
    word = word.replace("%", "%%")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(template: str, command: Sequence[str], config: Path) -> str:
    """The packaged unit with ExecStart= running ``command run -c config``."""
    lines = template.splitlines()
    found = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    if len(found) != 1:
        raise ValueError(f"the unit template has {len(found)} ExecStart= lines, expected one")
    argv = [*command, "run", "-c", str(config)]
    lines[found[0]] = "ExecStart=" + " ".join(unit_quote(word) for word in argv)
    return "\n".join(lines) + "\n"


# ProtectHome=yes and PrivateTmp=yes hide these from the service.
HIDDEN_FROM_UNIT = tuple(
    Path(p)
    for p in ("/home", "/root", "/run/user", "/tmp", "/var/tmp")  # noqa: S108
)


def hidden_from_unit(paths: Sequence[Path]) -> Path | None:
    """The hidden directory that one of ``paths`` is in, or None."""
    for path in paths:
        for hidden in HIDDEN_FROM_UNIT:
            if path.is_relative_to(hidden):
                return hidden
    return None


def plan_install(
    *,
    template: str,
    command: Sequence[str],
    config: Path,
    config_exists: bool,
    systemctl: str,
    enable: bool,
    unit_dir: Path = UNIT_DIR,
) -> list[Step]:
    dropins = default_dropin_dir(config)
    steps: list[Step] = [
        WriteFile(
            unit_dir / UNIT_NAME,
            render_unit(template, command, config),
            f"ExecStart={shlex.join(command)} run -c {config}",
        ),
        MakeDir(dropins),
    ]
    if config_exists:
        steps.append(Keep(config, "exists, kept as it is"))
    else:
        starter = STARTER_CONFIG.format(path=config, dropins=dropins)
        steps.append(WriteFile(config, starter, "starter config"))
    steps.append(Run((systemctl, "daemon-reload")))
    if enable:
        steps.append(Run((systemctl, "enable", "--now", UNIT_NAME)))
    return steps


def plan_uninstall(
    *, config: Path, unit_exists: bool, systemctl: str, unit_dir: Path = UNIT_DIR
) -> list[Step]:
    unit = unit_dir / UNIT_NAME
    kept = [Keep(config, "kept"), Keep(default_dropin_dir(config), "kept")]
    if not unit_exists:
        return [Keep(unit, "not installed, nothing to remove"), *kept]
    return [
        Run((systemctl, "disable", "--now", UNIT_NAME)),
        RemoveFile(unit),
        Run((systemctl, "daemon-reload")),
        *kept,
    ]


# --- facts and I/O ---------------------------------------------------------------------


def running_command(argv0: str = sys.argv[0], executable: str = sys.executable) -> list[str]:
    """The streamd that runs now, as an absolute command for ExecStart=.

    Not resolved through symlinks: a venv's ``bin/python`` links to the system
    interpreter, and the venv's site-packages are only found through the link.
    """
    if Path(argv0).name == "streamd":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.access(found, os.X_OK):
            return [os.path.abspath(found)]
    script = Path(executable).with_name("streamd")
    if script.is_file() and os.access(script, os.X_OK):
        return [os.path.abspath(script)]
    return [os.path.abspath(executable), "-m", "streamd"]


def unit_template() -> str:
    return resources.files("streamd").joinpath(UNIT_NAME).read_text(encoding="utf-8")


def _systemctl() -> str:
    return shutil.which("systemctl") or "systemctl"


def _ready_for_real_run() -> None:
    if os.geteuid() != 0:
        raise CliError(
            "must run as root (e.g. with sudo); --dry-run shows the steps", ExitCode.NO_PERMISSION
        )
    if not Path("/run/systemd/system").is_dir():
        raise CliError(
            "systemd is not running on this machine (no /run/systemd/system)", ExitCode.UNAVAILABLE
        )
    if shutil.which("systemctl") is None:
        raise CliError("systemctl not found", ExitCode.UNAVAILABLE)


def apply(step: Step) -> None:
    if isinstance(step, WriteFile):
        step.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(step.path, step.text, step.mode)
    elif isinstance(step, MakeDir):
        step.path.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif isinstance(step, RemoveFile):
        step.path.unlink(missing_ok=True)
    elif isinstance(step, Run):
        result = subprocess.run(step.argv, check=False, timeout=300)
        if result.returncode != 0:
            raise CliError(f"{shlex.join(step.argv)} failed with exit code {result.returncode}")


def execute(steps: Sequence[Step], dry_run: bool) -> int:
    if not dry_run:
        _ready_for_real_run()
    for step in steps:
        prefix = "would " if dry_run and not isinstance(step, Keep) else ""
        print(prefix + step.describe(), flush=True)
        if not dry_run:
            try:
                apply(step)
            except OSError as exc:
                raise CliError(f"{step.describe()}: {exc}") from None
    return 0


def files_to_execute(program: Path) -> list[Path]:
    """``program`` and the interpreter on its ``#!`` line, each also through its
    symlinks: a venv's python may link into ~/.pyenv, which the unit hides."""
    files = [program]
    try:
        with program.open("rb") as handle:
            first = handle.readline(4096)
    except OSError:
        first = b""
    if first.startswith(b"#!") and first[2:].split():
        files.append(Path(first[2:].split()[0].decode(errors="replace")))
    return [path for file in files for path in (file, file.resolve())]


def install_systemd(config: Path, enable: bool, dry_run: bool) -> int:
    command = running_command()
    hidden = hidden_from_unit(files_to_execute(Path(command[0])))
    if hidden is not None:
        raise CliError(
            f"{command[0]} (or its interpreter) is under {hidden}, which the unit hides "
            "from the service (ProtectHome=, PrivateTmp=); install streamd system-wide, "
            "e.g. in /opt/streamd/venv with the system's python3 (see README)",
            ExitCode.USAGE,
        )
    steps = plan_install(
        template=unit_template(),
        command=command,
        config=config,
        config_exists=config.exists(),
        systemctl=_systemctl(),
        enable=enable,
    )
    return execute(steps, dry_run)


def uninstall_systemd(config: Path, dry_run: bool) -> int:
    steps = plan_uninstall(
        config=config, unit_exists=(UNIT_DIR / UNIT_NAME).exists(), systemctl=_systemctl()
    )
    return execute(steps, dry_run)
