"""A hundred cameras on one node: the warm fork server beside the spawn path,
in the same run, on the same machine, at the same load.

Usage: python -m benchmarks.many_cameras [--cameras 100] [--add 50] [--idle 10]
           [--old CHECKOUT] [--variants fork,spawn,old] [--live-within 300]

Variants: ``fork`` (this checkout, children forked from the fork server),
``spawn`` (this checkout, ``[supervisor] fork_server = false``: every child
exec'd, but with start slots and the start deadline) and ``old`` (``--old``: a
checkout of the code before the fork server, e.g. ``git archive main``, run from
that folder). Synthetic cameras at 5 fps, 320x240, no viewers, ``detector =
"none"``, ``stall_timeout`` at its default (10 s). For each variant:

- ``start_s``: ``streamd run`` started → every camera ``live`` (``/api/cameras``)
- ``stall_kills``: children killed as stalled meanwhile (the start storm)
- ``child_pss_mb``: median and max PSS of a camera child (``smaps_rollup``)
- ``all_pss_mb``: PSS of the daemon, its fork server and every child
- ``idle_cpu_pct``: camera children's CPU per camera over ``--idle`` seconds, % of a core
- ``restart_s``: a SIGKILLed child → its camera ``live`` again (``restart_delay_initial`` 0.2 s)
- ``reload_s``: SIGHUP adding ``--add`` cameras (a drop-in) → all of them ``live``
- ``fallback_restart_s`` (fork only): the fork server SIGKILLed, at once a child
  SIGKILLed → its camera ``live`` again (exec'd meanwhile, or forked by the new
  fork server); ``forkserver_back_s``: the fork server SIGKILLed → ``up`` again

The load average is printed with each variant: others' work moves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._procs import descendants
from benchmarks._redis import redis_server
from tests.conftest import write_config
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
CAMERA = {"source": "synthetic:?width=320&height=240", "fps": 5, "detector": "none"}
POLL_S = 0.25


@dataclass
class Figures:
    variant: str
    load_before: float = 0.0
    start_s: float | None = None
    live_at_deadline: int = 0
    stall_kills: int = 0
    start_timeouts: int = 0
    child_pss_median_mb: float = 0.0
    child_pss_max_mb: float = 0.0
    all_pss_mb: float = 0.0
    idle_cpu_pct: float = 0.0
    restart_s: float | None = None
    reload_s: float | None = None
    fallback_restart_s: float | None = None
    fallback_started_by: str | None = None
    forkserver_back_s: float | None = None
    started_by: dict[str, int] = field(default_factory=dict)
    load_after: float = 0.0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class Run:
    """One ``streamd run`` from ``checkout`` with ``count`` cameras."""

    def __init__(self, checkout: Path, folder: Path, redis_port: int, count: int, extra: str):
        self.port = free_port()
        self.config = write_config(
            folder / "streamd.toml",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            port=self.port,
            cameras=[{"id": f"cam{i:03d}", **CAMERA} for i in range(count)],
            extra=extra,
            head='log_level = "warning"',
        )
        self.log = (folder / "streamd.log").open("wb")
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamd", "run", "-c", str(self.config)],
            cwd=checkout,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def answer(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/cameras"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return dict(json.load(answer))
        except OSError:
            return {}

    def cameras(self) -> dict[str, dict[str, Any]]:
        return dict(self.answer().get("cameras", {}))

    def wait_live(self, ids: list[str], within: float, since: float) -> tuple[float | None, int]:
        deadline = since + within
        live = 0
        while time.monotonic() < deadline:
            cams = self.cameras()
            live = sum(1 for c in ids if cams.get(c, {}).get("state") == "live")
            if live == len(ids):
                return time.monotonic() - since, live
            time.sleep(POLL_S)
        return None, live

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def measure(variant: str, checkout: Path, redis_port: int, args: argparse.Namespace) -> Figures:
    figures = Figures(variant, load_before=round(os.getloadavg()[0], 2))
    extra = "\n[supervisor]\nrestart_delay_initial = 0.2\n"
    if variant == "spawn":
        extra += "fork_server = false\n"
    ids = [f"cam{i:03d}" for i in range(args.cameras)]
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(checkout, Path(tmp), redis_port, args.cameras, extra)
        try:
            start_s, figures.live_at_deadline = run.wait_live(ids, args.live_within, run.started)
            figures.start_s = None if start_s is None else round(start_s, 2)
            # Only ours: the registry also lists an earlier variant's cameras a while.
            cams = {c: info for c, info in run.cameras().items() if c in ids}
            figures.stall_kills = sum(int(c.get("stalls", 0)) for c in cams.values())
            figures.start_timeouts = sum(int(c.get("start_timeouts", 0)) for c in cams.values())
            for c in cams.values():
                how = str(c.get("started_by", "spawn (old)"))
                figures.started_by[how] = figures.started_by.get(how, 0) + 1
            time.sleep(2.0)  # settle
            child_pids = [
                int(c["pid"]) for cid, c in run.cameras().items() if cid in ids and c.get("pid")
            ]
            pss = sorted(pss_kb(p) for p in child_pids)
            figures.child_pss_median_mb = round(statistics.median(pss) / 1024, 1) if pss else 0
            figures.child_pss_max_mb = round(pss[-1] / 1024, 1) if pss else 0
            everything = [run.process.pid, *descendants(run.process.pid)]
            figures.all_pss_mb = round(sum(pss_kb(p) for p in everything) / 1024, 1)
            before = {p: cpu_ticks(p) for p in child_pids}
            t0 = time.monotonic()
            time.sleep(args.idle)
            used = sum(cpu_ticks(p) - before[p] for p in child_pids) / os.sysconf("SC_CLK_TCK")
            seconds = time.monotonic() - t0
            figures.idle_cpu_pct = round(100 * used / seconds / max(1, len(child_pids)), 3)
            figures.restart_s = restart_time(run, ids[0])
            figures.reload_s = reload_time(run, args)
            if variant == "fork":
                fallback_time(run, ids[1], figures)
        finally:
            figures.load_after = round(os.getloadavg()[0], 2)
            run.stop()
    return figures


def restart_time(run: Run, camera_id: str) -> float | None:
    pid = int(run.cameras()[camera_id]["pid"])
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        c = run.cameras().get(camera_id, {})
        if c.get("pid") not in (None, pid) and c.get("state") == "live":
            return round(time.monotonic() - killed, 2)
        time.sleep(0.05)
    return None


def fallback_time(run: Run, camera_id: str, figures: Figures) -> None:
    server = int(run.answer()["fork_server"]["pid"])
    pid = int(run.cameras()[camera_id]["pid"])
    os.kill(server, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 60 and (
        figures.fallback_restart_s is None or figures.forkserver_back_s is None
    ):
        answer = run.answer()
        camera = answer.get("cameras", {}).get(camera_id, {})
        back = camera.get("pid") not in (None, pid) and camera.get("state") == "live"
        if figures.fallback_restart_s is None and back:
            figures.fallback_restart_s = round(time.monotonic() - killed, 2)
            figures.fallback_started_by = camera.get("started_by")
        fork_server = answer.get("fork_server", {})
        up = fork_server.get("pid") not in (None, server) and fork_server.get("state") == "up"
        if figures.forkserver_back_s is None and up:
            figures.forkserver_back_s = round(time.monotonic() - killed, 2)
        time.sleep(0.05)


def reload_time(run: Run, args: argparse.Namespace) -> float | None:
    dropins = run.config.parent / f"{run.config.stem}.d"
    dropins.mkdir(exist_ok=True)
    added = [f"add{i:03d}" for i in range(args.add)]
    (dropins / "added.toml").write_text(
        "".join(
            f'[[cameras]]\nid = "{c}"\nsource = "{CAMERA["source"]}"\nfps = 5\n'
            f'detector = "none"\n\n'
            for c in added
        )
    )
    sent = time.monotonic()
    run.process.send_signal(signal.SIGHUP)
    took, _live = run.wait_live(added, args.live_within, sent)
    return None if took is None else round(took, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=100)
    parser.add_argument("--add", type=int, default=50)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--old", type=Path, help="a checkout of the code before the fork server")
    parser.add_argument("--variants", default="fork,spawn,old")
    parser.add_argument("--live-within", type=float, default=300.0)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v != "old" or args.old]
    results = []
    with redis_server() as redis_port:
        for variant in variants:
            checkout = args.old if variant == "old" else ROOT
            figures = measure(variant, checkout, redis_port, args)
            print(json.dumps(figures.__dict__), flush=True)
            results.append(figures)
    print(f"\n{args.cameras} cameras (+{args.add} by reload), {os.cpu_count()} CPUs")
    keys = [k for k in Figures.__dataclass_fields__ if k != "variant"]
    print("figure".ljust(22) + "".join(f.variant.rjust(28) for f in results))
    for key in keys:
        print(key.ljust(22) + "".join(str(getattr(f, key)).rjust(28) for f in results))


if __name__ == "__main__":
    main()
