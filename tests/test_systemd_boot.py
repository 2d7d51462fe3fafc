"""The unit under a real systemd: a Debian container booted with systemd-nspawn
follows the README's systemd section as written, then drives the service with
systemctl and journalctl the way an operator does.

The container has no network (``--private-network``): pip installs from a
wheelhouse built here, and there is no Redis in it, so the daemon runs in its
embedded mode, which is what the README's one-command install gives a machine
without Redis (the Redis paths are covered by the rest of the suite). That also
gives every camera a real ``warning`` in the journal ("redis unreachable") for
the journalctl recipes to find.

Steps share one booted container and run in file order; each says what failed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from .container import (
    ROOT,
    Container,
    build_rootfs,
    build_wheelhouse,
    copy_checkout,
    python_version_in,
    require_container_support,
)
from .support import wait_for

pytestmark = pytest.mark.timeout(900)

VENV_BIN = "/opt/streamd/venv/bin"
CHECKOUT = "/root/streamd"
HEALTHZ = (
    "python3 -c 'import urllib.request as u; "
    'r = u.urlopen("http://127.0.0.1:8765/healthz", timeout=5); '
    "print(r.status, r.read().decode())'"
)
CAMERAS = (
    "python3 -c 'import urllib.request as u; "
    'print(u.urlopen("http://127.0.0.1:8765/api/cameras", timeout=5).read().decode())\''
)


def readme_block(heading: str) -> str:
    """The first ```sh block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)
    assert len(section) == 2, f"README.md has no {heading!r} section"
    match = re.search(r"```sh\n(.*?)```", section[1], re.DOTALL)
    assert match, f"no ```sh block under {heading!r} in README.md"
    return match.group(1)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    require_container_support()
    started = time.monotonic()
    rootfs = build_rootfs()
    print(f"\nrootfs ready in {time.monotonic() - started:.1f} s: {rootfs}", file=sys.stderr)
    # Wheels built here must fit the container's interpreter.
    python = python_version_in(rootfs)
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert python.startswith(f"{host}."), f"the container has Python {python}, the host {host}"
    work = tmp_path_factory.mktemp("boot")
    checkout = copy_checkout(work / "streamd")
    wheels = build_wheelhouse(checkout, work / "wheelhouse", python)
    # Offline pip for every pip run in the container, sudo's included (it drops
    # the caller's environment, so PIP_* variables would not reach it).
    pip_conf = work / "pip.conf"
    pip_conf.write_text("[global]\nno-index = true\nfind-links = /wheelhouse\n")
    box = Container(
        rootfs,
        f"streamd-test-{os.getpid()}",
        work / "console.log",
        [f"{wheels}:/wheelhouse:ro", f"{pip_conf}:/etc/pip.conf:ro", f"{checkout}:{CHECKOUT}"],
    )
    try:
        box.boot()
        print(f"booted after {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield box
    finally:
        box.shutdown()
        print(f"container done after {time.monotonic() - started:.1f} s", file=sys.stderr)


@pytest.fixture(scope="module")
def installed(box: Container) -> subprocess.CompletedProcess[str]:
    """The README's systemd section, run as written from the checkout."""
    block = readme_block("## Running under systemd")
    assert "streamd install --systemd" in block
    return box.run(f"set -eux\n{block}", cwd=CHECKOUT, timeout=300)


def running(box: Container) -> int:
    """Start streamd unless it runs; its main PID once active."""
    box.run("systemctl start streamd", timeout=60)
    assert box.run("systemctl is-active streamd").stdout.strip() == "active"
    return main_pid(box)


def with_camera_door(box: Container) -> None:
    if "door" not in cameras(box):
        box.run(f"{VENV_BIN}/streamd camera add door 'synthetic:?width=160&height=120' --fps 5")
        box.run("systemctl reload streamd")
    wait_for(lambda: cameras(box).get("door", {}).get("state") == "live", 30, "camera door live")


def show(box: Container, *props: str) -> dict[str, str]:
    out = box.run(f"systemctl show streamd -p {','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def main_pid(box: Container) -> int:
    return int(show(box, "MainPID")["MainPID"])


def cameras(box: Container) -> dict[str, dict[str, object]]:
    return dict(json.loads(box.run(CAMERAS).stdout)["cameras"])


def wait_active_with_new_pid(box: Container, old_pid: int, timeout: float) -> int:
    def restarted() -> int:
        state = show(box, "ActiveState", "SubState", "MainPID")
        pid = int(state["MainPID"])
        running = state["ActiveState"] == "active" and state["SubState"] == "running"
        return pid if running and pid not in (0, old_pid) else 0

    return int(wait_for(restarted, timeout, "streamd active again with a new PID", interval=0.5))


def journal(box: Container, *args: str) -> str:
    return box.run("journalctl --no-pager " + shlex.join(args), check=False).stdout


def test_readme_install_commands_run_as_written(
    box: Container, installed: subprocess.CompletedProcess[str]
) -> None:
    unit = box.run("cat /etc/systemd/system/streamd.service").stdout
    assert f"ExecStart={VENV_BIN}/streamd run -c /etc/streamd.toml" in unit
    assert "write /etc/streamd.toml (starter config)" in installed.stdout
    box.run("test -d /etc/streamd.d && test -s /etc/streamd.toml")
    assert box.run("systemctl is-enabled streamd").stdout.strip() == "enabled"
    assert box.run("systemctl is-active streamd").stdout.strip() == "active"  # --enable: --now
    # Installing again keeps the config that now exists.
    again = box.run(f"{VENV_BIN}/streamd install --systemd --dry-run").stdout
    assert "/etc/streamd.toml: exists, kept as it is" in again


def test_start_status_and_healthz(box: Container, installed: object) -> None:
    running(box)  # `systemctl start`: already running after --enable, a no-op
    status = wait_for(
        lambda: (
            (s := box.run("systemctl status streamd --no-pager", check=False).stdout)
            and 'Status: "cameras live 1/1' in s
            and s
        ),
        30,
        "STATUS= cameras live 1/1 in systemctl status",
        interval=0.5,
    )
    assert "Active: active (running)" in status
    health = box.run(HEALTHZ).stdout
    assert health.startswith("200"), health


def test_reload_adds_a_camera_in_the_same_process(box: Container, installed: object) -> None:
    pid = running(box)
    box.run("rm -f /etc/streamd.d/door.toml && systemctl reload streamd")  # a rerun
    wait_for(lambda: "door" not in cameras(box), 30, "no camera door")
    box.run(f"{VENV_BIN}/streamd camera add door 'synthetic:?width=160&height=120' --fps 5")
    box.run("systemctl reload streamd")
    wait_for(lambda: cameras(box).get("door", {}).get("state") == "live", 30, "camera door live")
    assert main_pid(box) == pid
    assert box.run("systemctl is-active streamd").stdout.strip() == "active"


def test_invalid_reload_is_refused_and_the_old_config_keeps_running(
    box: Container, installed: object
) -> None:
    pid = running(box)
    box.run("printf 'cameras = [ {id = \"x\"' > /etc/streamd.d/broken.toml")
    try:
        box.run("systemctl reload streamd")
        wait_for(
            lambda: "reload refused" in journal(box, "-u", "streamd", "-p", "err", "-o", "cat"),
            20,
            "the refused reload in the journal at priority err",
            interval=0.5,
        )
        refused = json.loads(
            journal(box, "-u", "streamd", "-p", "err", "-o", "json", "-n", "1").splitlines()[-1]
        )
        assert "broken.toml" in refused["FILE"], refused
        assert main_pid(box) == pid
        assert box.run("systemctl is-active streamd").stdout.strip() == "active"
        assert "demo" in cameras(box)
    finally:
        box.run("rm -f /etc/streamd.d/broken.toml")


def test_readme_journalctl_recipes_find_their_entries(box: Container, installed: object) -> None:
    running(box)
    with_camera_door(box)
    recipes = [
        line.split("#", 1)[0].strip()
        for line in readme_block("### Logs and journald").splitlines()
        if line.strip().startswith("journalctl")
    ]
    assert len(recipes) >= 4
    for recipe in recipes:
        if " -f" in f"{recipe} ":
            # Following never ends by itself: it must print, then we stop it.
            out = box.run(f"timeout 3 {recipe}", check=False).stdout
        else:
            out = wait_for(
                lambda r=recipe: box.run(r, check=False).stdout.strip(),  # type: ignore[misc]
                25,
                f"output from `{recipe}`",
                interval=1,
            )
        assert out.strip(), f"`{recipe}` printed nothing"
    warnings = journal(box, "-u", "streamd", "CAMERA_ID=door", "-p", "warning", "-o", "json")
    records = [json.loads(line) for line in warnings.splitlines()]
    assert records and all(r["CAMERA_ID"] == "door" and int(r["PRIORITY"]) <= 4 for r in records)
    assert all(r["_SYSTEMD_UNIT"] == "streamd.service" for r in records)


def test_hardening_in_force(box: Container, installed: object) -> None:
    pid = running(box)
    status = box.run(f"cat /proc/{pid}/status").stdout
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert re.search(r"^Uid:\s+(\d+)", status, re.M)
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    assert 61184 <= uid <= 65519, f"not a DynamicUser uid: {uid}"
    for directory in ("/etc", "/opt/streamd"):
        write = box.run(f"nsenter -t {pid} -m touch {directory}/streamd-probe", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    # Device policy: a process in the service's cgroup may not open a device the
    # container itself allows (/dev/net/tun), while the container may. The allowed
    # side (/dev/video*) needs a kernel with V4L2 loaded ("video4linux" in
    # /proc/devices) to resolve char-video4linux; machines without cameras have none.
    probe = 'python3 -c \'open("/dev/net/tun", "rb")\''
    assert box.run(probe, check=False).returncode == 0, "the container cannot open /dev/net/tun"
    cgroup = "/sys/fs/cgroup" + show(box, "ControlGroup")["ControlGroup"]
    inside = box.run(f"echo $$ > {cgroup}/cgroup.procs && exec {probe}", check=False)
    assert inside.returncode != 0 and "Operation not permitted" in inside.stderr, inside.stderr
    policy = show(box, "DevicePolicy", "DeviceAllow")
    assert policy == {"DevicePolicy": "closed", "DeviceAllow": "char-video4linux rw"}, policy


def test_watchdog_keeps_it_alive_and_restarts_a_stopped_main_process(
    box: Container, installed: object
) -> None:
    running(box)
    assert show(box, "WatchdogUSec")["WatchdogUSec"] == "30s"  # the unit as shipped
    # The mechanism under a shorter WatchdogSec (a drop-in, as an operator would
    # write one), so the suite does not wait 30 s twice.
    box.run(
        "mkdir -p /etc/systemd/system/streamd.service.d && printf '[Service]\\nWatchdogSec=6\\n'"
        " > /etc/systemd/system/streamd.service.d/watchdog.conf"
        " && systemctl daemon-reload && systemctl restart streamd",
        timeout=60,
    )
    try:
        state = show(box, "MainPID", "NRestarts", "WatchdogUSec", "ExecMainStartTimestampMonotonic")
        pid, restarts = int(state["MainPID"]), int(state["NRestarts"])
        assert state["WatchdogUSec"] == "6s"
        # Alive for longer than WatchdogSec with the same PID: the pings arrive.
        started_us = int(state["ExecMainStartTimestampMonotonic"])
        wait_for(
            lambda: time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6 - started_us > 8e6,
            15,
            "streamd up for longer than WatchdogSec",
            interval=0.5,
        )
        assert show(box, "MainPID", "NRestarts") == {
            "MainPID": str(pid),
            "NRestarts": str(restarts),
        }
        box.run(f"kill -STOP {pid}")
        new_pid = wait_active_with_new_pid(box, pid, 6 + 15 + 20)
        assert int(show(box, "NRestarts")["NRestarts"]) == restarts + 1
        assert "Watchdog timeout" in journal(box, "-u", "streamd", "-o", "cat")
        assert new_pid != pid
    finally:
        box.run(
            "rm -rf /etc/systemd/system/streamd.service.d && systemctl daemon-reload", check=False
        )


def test_sigkill_is_restarted_by_restart_on_failure(box: Container, installed: object) -> None:
    running(box)
    state = show(box, "MainPID", "NRestarts")
    pid, restarts = int(state["MainPID"]), int(state["NRestarts"])
    box.run("systemctl kill -s SIGKILL streamd")
    wait_active_with_new_pid(box, pid, 30)
    assert int(show(box, "NRestarts")["NRestarts"]) == restarts + 1


def test_stop_exits_cleanly_and_leaves_no_process(box: Container, installed: object) -> None:
    running(box)
    with_camera_door(box)  # children to stop too
    box.run("systemctl stop streamd", timeout=40)
    state = show(box, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "ControlGroup")
    assert state["ActiveState"] == "inactive" and state["Result"] == "success", state
    assert state["ExecMainCode"] == "1" and state["ExecMainStatus"] == "0", state  # exited 0
    # The brackets keep pgrep from matching the shell that runs it.
    left = box.run("pgrep -a -f '[s]treamd (run|[.]worker)' || true").stdout.strip()
    assert left == "", f"processes left after stop: {left}"
    assert state["ControlGroup"] == "", state
    gone = box.run("test -e /sys/fs/cgroup/system.slice/streamd.service", check=False)
    assert gone.returncode != 0, "the service's cgroup is still there"


def test_uninstall_removes_the_unit_and_keeps_the_config(box: Container, installed: object) -> None:
    box.run(f"{VENV_BIN}/streamd uninstall --systemd")
    assert box.run("test -e /etc/systemd/system/streamd.service", check=False).returncode != 0
    assert box.run("systemctl cat streamd", check=False).returncode != 0
    box.run("test -s /etc/streamd.toml && test -s /etc/streamd.d/door.toml")
