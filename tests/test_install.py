"""``streamd install/uninstall --systemd`` on the host: the plan is pure, and
``--dry-run`` changes nothing. The real run is in tests/test_systemd_boot.py,
under a booted systemd."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from streamd import cli
from streamd.config import load_config
from streamd.install import (
    RemoveFile,
    Run,
    WriteFile,
    apply,
    files_to_execute,
    hidden_from_unit,
    plan_install,
    plan_uninstall,
    running_command,
    unit_quote,
    unit_template,
)
from streamd.states import ExitCode


def test_install_plan_points_execstart_at_the_running_streamd(tmp_path: Path) -> None:
    template = unit_template()
    steps = plan_install(
        template=template,
        command=["/opt/my venv/bin/streamd"],
        config=Path("/etc/streamd.toml"),
        config_exists=True,
        systemctl="/usr/bin/systemctl",
        enable=True,
    )
    assert [s.describe() for s in steps] == [
        "write /etc/systemd/system/streamd.service"
        " (ExecStart='/opt/my venv/bin/streamd' run -c /etc/streamd.toml)",
        "create directory /etc/streamd.d",
        "/etc/streamd.toml: exists, kept as it is",
        "run /usr/bin/systemctl daemon-reload",
        "run /usr/bin/systemctl enable --now streamd.service",
    ]
    unit = steps[0]
    assert isinstance(unit, WriteFile)
    changed = [
        (old, new)
        for old, new in zip(template.splitlines(), unit.text.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [
        (
            "ExecStart=/opt/streamd/venv/bin/streamd run -c /etc/streamd.toml",
            'ExecStart="/opt/my venv/bin/streamd" run -c /etc/streamd.toml',
        )
    ]


def test_install_plan_writes_a_valid_starter_config_only_when_absent(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "streamd.toml"
    steps = plan_install(
        template=unit_template(),
        command=["/usr/bin/streamd"],
        config=config,
        config_exists=False,
        systemctl="systemctl",
        enable=False,
    )
    assert not any(isinstance(s, Run) and "enable" in s.argv for s in steps)
    for step in steps[1:3]:  # the drop-in directory and the starter config
        apply(step)
    assert (tmp_path / "etc" / "streamd.d").is_dir()
    assert [c.id for c in load_config(config, {}).cameras] == ["demo"]


def test_uninstall_plan_keeps_the_config() -> None:
    config = Path("/etc/streamd.toml")
    steps = [s.describe() for s in plan_uninstall(config=config, unit_exists=True, systemctl="sc")]
    assert steps == [
        "run sc disable --now streamd.service",
        "remove /etc/systemd/system/streamd.service",
        "run sc daemon-reload",
        "/etc/streamd.toml: kept",
        "/etc/streamd.d: kept",
    ]
    absent = plan_uninstall(config=config, unit_exists=False, systemctl="sc")
    assert not any(isinstance(s, Run | RemoveFile) for s in absent)


def test_execstart_words_are_escaped_for_systemd() -> None:
    assert unit_quote("/opt/streamd/bin/streamd") == "/opt/streamd/bin/streamd"
    assert unit_quote("/opt/100%/streamd") == "/opt/100%%/streamd"  # % starts a specifier
    assert unit_quote('/opt/a "b"/streamd') == '"/opt/a \\"b\\"/streamd"'


def test_running_command_is_the_streamd_that_runs(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "streamd"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert running_command(str(script), "/usr/bin/python3") == [str(script)]
    # `python -m streamd` from a venv: its console script beside the interpreter.
    python = tmp_path / "bin" / "python"
    assert running_command("/x/streamd/__main__.py", str(python)) == [str(script)]
    bare = tmp_path / "other" / "python"
    assert running_command("-m", str(bare)) == [str(bare), "-m", "streamd"]


def console_script(directory: Path, interpreter: str = sys.executable) -> Path:
    """A ``streamd`` console script as pip writes one."""
    script = directory / "bin" / "streamd"
    script.parent.mkdir()
    script.write_text(
        f"#!{interpreter}\nimport sys\nfrom streamd.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "streamd.toml"
    # Not under /tmp, which the unit hides (a refusal, tested below); removed after.
    # This interpreter may live under /root (pyenv): found through PATH instead.
    with tempfile.TemporaryDirectory(dir="/dev/shm") as venv:
        script = console_script(Path(venv), "/usr/bin/env python3")
        result = subprocess.run(
            [str(script), "install", "--systemd", "--enable", "--dry-run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"would write /etc/systemd/system/streamd.service (ExecStart={script} run -c {config})",
        f"would create directory {tmp_path}/streamd.d",
        f"would write {config} (starter config)",
        f"would run {shutil.which('systemctl') or 'systemctl'} daemon-reload",
        f"would run {shutil.which('systemctl') or 'systemctl'} enable --now streamd.service",
    ]
    assert list(tmp_path.iterdir()) == []  # no config, no drop-in directory


def test_a_streamd_the_unit_cannot_see_is_refused(tmp_path: Path) -> None:
    assert hidden_from_unit([Path("/opt/streamd/venv/bin/streamd")]) is None
    home = Path("/home/me/.local/bin/streamd")
    assert hidden_from_unit([Path("/usr/local/bin/streamd"), home]) == Path("/home")
    # A console script in a venv under /tmp, which PrivateTmp=yes hides.
    assert tmp_path.is_relative_to("/tmp")
    script = console_script(tmp_path)
    result = subprocess.run(
        [str(script), "install", "--systemd", "--dry-run", "-c", str(tmp_path / "s.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{script} (or its interpreter) is under /tmp, which the unit hides" in result.stderr
    assert result.stdout == ""
    # An interpreter under /root (pyenv's, say) behind a script elsewhere.
    pyenv_python = Path("/root/.pyenv/versions/3.11.7/bin/python3.11")
    assert hidden_from_unit(files_to_execute(pyenv_python)) == Path("/root")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as venv:
        script = console_script(Path(venv), str(pyenv_python))
        assert hidden_from_unit(files_to_execute(script)) == Path("/root")


def test_a_real_run_without_root_exits_with_noperm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code = cli.main(["uninstall", "--systemd", "-c", str(tmp_path / "streamd.toml")])
    assert code == ExitCode.NO_PERMISSION and code == 77  # sysexits.h EX_NOPERM
    assert "must run as root" in capsys.readouterr().err
