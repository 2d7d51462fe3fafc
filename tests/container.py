"""A Debian container booted with ``systemd-nspawn --boot``: systemd runs as its
PID 1, so units, ``systemctl`` and ``journalctl`` behave as on a real machine.

Commands enter it with ``nsenter`` (all namespaces of its PID 1): no systemd is
needed on the host, unlike ``machinectl shell`` or ``systemd-run --machine``.
"""

from __future__ import annotations

import contextlib
import email.parser
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .support import wait_for

ROOT = Path(__file__).resolve().parent.parent
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")  # nspawn's lock and propagation dirs


def require_container_support() -> None:
    """Fail (never skip) with the reason when this machine cannot boot a container."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (systemd-nspawn needs root; CI runs as root)")
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} missing (scripts/test installs it)")
    for ns in ("mnt", "pid", "net", "uts", "ipc"):
        if not Path(f"/proc/self/ns/{ns}").exists():
            problems.append(f"no {ns} namespaces in this kernel")
    if (
        not Path("/sys/fs/cgroup/unified").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        problems.append("no cgroup v2 hierarchy (DeviceAllow= needs it)")
    assert not problems, "cannot boot systemd in a container here: " + "; ".join(problems)


def build_rootfs() -> Path:
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-rootfs")], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"scripts/build-rootfs failed:\n{result.stderr[-3000:]}"
    if result.stderr.strip():
        print(result.stderr.strip(), file=sys.stderr)
    return Path(result.stdout.strip().splitlines()[-1])


def copy_checkout(dest: Path) -> Path:
    """The working tree as it is (uncommitted edits included), without build debris."""
    shutil.copytree(
        ROOT,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
        ),
    )
    return dest


def python_version_in(rootfs: Path) -> str:
    result = subprocess.run(
        ["chroot", str(rootfs), "python3", "-c", "import platform as p; print(p.python_version())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def build_wheelhouse(checkout: Path, dest: Path, python_full_version: str) -> Path:
    """Wheels for streamd's dependencies and its build backend, for an offline pip
    on another interpreter of the same minor version.

    pip resolves markers for the interpreter it runs on, never for a target
    (pypa/pip#11010): redis needs async-timeout on Python < 3.11.3 (Debian 12 has
    3.11.2), so requirements are walked again with the target's markers and what
    is missing is added.
    """
    project = tomllib.loads((checkout / "pyproject.toml").read_text())
    roots = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    wanted = [str(checkout), *project["build-system"]["requires"]]
    for _ in range(5):
        _pip_wheel(dest, wanted)
        wanted = _missing_requirements(dest, roots, python_full_version)
        if not wanted:
            return dest
    raise AssertionError(f"wheelhouse still misses {wanted}")


def _pip_wheel(dest: Path, requirements: Sequence[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest), *requirements],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stderr[-3000:]}"


def _missing_requirements(wheelhouse: Path, roots: Sequence[str], python: str) -> list[str]:
    env: dict[str, str] = {
        **{key: str(value) for key, value in default_environment().items()},
        "python_full_version": python,
        "python_version": ".".join(python.split(".")[:2]),
    }
    wheels = {canonicalize_name(w.name.split("-")[0]): w for w in wheelhouse.glob("*.whl")}
    missing: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(r) for r in roots]
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        if name not in wheels:
            missing.append(f"{req.name}{req.specifier}")
            continue
        for line in _requires_dist(wheels[name]):
            dep = Requirement(line)
            extras = {"", *req.extras}
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                pending.append(dep)
    return missing


def _requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode())
    return metadata.get_all("Requires-Dist") or []


class Container:
    def __init__(self, rootfs: Path, name: str, log_path: Path, binds: Sequence[str]) -> None:
        self.rootfs = rootfs
        self.name = name
        self.log_path = log_path
        self.binds = list(binds)
        self.process: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self._made_runtime_dir = False

    def boot(self, timeout: float = 90) -> None:
        env = dict(os.environ)
        # Unified cgroup hierarchy + the bpf() call: without both, systemd in the
        # container cannot attach the device-cgroup BPF programs of DeviceAllow=.
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        argv = [
            "systemd-nspawn",
            "--boot",
            f"--directory={self.rootfs}",
            f"--machine={self.name}",
            "--volatile=overlay",  # the cached tree stays pristine; changes go to tmpfs
            "--private-network",
            "--register=no",  # no machined on the host
            "--keep-unit",
            "--system-call-filter=bpf",
            "--console=read-only",
            *[f"--bind{'-ro' if ro else ''}={spec}" for spec, ro in self._bind_specs()],
        ]
        self._made_runtime_dir = not NSPAWN_RUNTIME.exists()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        self.leader = wait_for(self._find_leader, 30, "the container's PID 1", interval=0.1)
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("systemctl is-system-running --wait", check=False, timeout=timeout)
            if state.stdout.strip() in ("running", "degraded"):
                break
            assert time.monotonic() < deadline, f"boot did not finish: {state.stdout}"
            time.sleep(0.2)
        failed = self.run("systemctl --failed --no-legend --plain", check=False).stdout
        assert state.stdout.strip() == "running", f"units failed at boot:\n{failed}"
        hierarchy = self.run("stat -fc %T /sys/fs/cgroup").stdout.strip()
        assert hierarchy == "cgroup2fs", f"not the unified cgroup hierarchy: {hierarchy}"

    def _bind_specs(self) -> list[tuple[str, bool]]:
        return [(spec.removesuffix(":ro"), spec.endswith(":ro")) for spec in self.binds]

    def _find_leader(self) -> int:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.process.returncode}:\n{self.log()}")
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def run(
        self, script: str, *, check: bool = True, timeout: float = 60, cwd: str = "/root"
    ) -> subprocess.CompletedProcess[str]:
        """``bash -c script`` inside the container, as root, with a clean environment."""
        argv = [
            "nsenter",
            f"--target={self.leader}",
            "--all",
            "env",
            "-i",
            f"PATH={PATH}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"cd {cwd} && {script}",
        ]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise AssertionError(f"timed out after {timeout}s: {script}\n{out}\n{err}") from None
        result = subprocess.CompletedProcess(argv, process.returncode, out, err)
        if check:
            assert result.returncode == 0, (
                f"`{script}` exited {result.returncode}\nstdout:\n{out}\nstderr:\n{err}"
            )
        return result

    def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGTERM asks the container's systemd for a clean poweroff.
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # Leave the host's /run as it was: nspawn keeps empty directories there.
        if self._made_runtime_dir and not any(p.is_file() for p in NSPAWN_RUNTIME.rglob("*")):
            shutil.rmtree(NSPAWN_RUNTIME, ignore_errors=True)
