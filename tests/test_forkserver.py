"""The warm fork server: the pure parts (protocol, exit settlement, start policy,
command lines), then real daemons: children are forked, keep their ps names and
hardening, survive a SIGKILLed fork server, never outlive the supervisor, and a
cold start of many cameras kills none for being slow to start."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamd.backoff import Backoff
from streamd.forkserver.entry import with_control_fd, worker_args
from streamd.forkserver.process import ExitWatch
from streamd.forkserver.protocol import (
    Exited,
    Failed,
    Forked,
    ForkMessageError,
    ForkRequest,
    Message,
    Ready,
    decode,
    encode,
)
from streamd.lifecycle import Lifecycle, control_closed_is_news
from streamd.proctitle import fit_argv
from streamd.starting import StartChoice, choose_start, start_slots
from streamd.states import ChildState

from .conftest import Daemon, RedisServer, kill_quietly, pid_alive, wait_for
from .support import streamd_processes
from .test_supervision import FAST, SYNTH


# --- pure ----------------------------------------------------------------------------
def test_protocol_round_trips_and_refuses_junk() -> None:
    messages: list[Message] = [
        Ready(7),
        ForkRequest(3, ("python", "-m", "streamd.worker"), {"A": "b"}),
        Forked(3, 1234),
        Failed(3, "fork: out of memory"),
        Exited(1234, -9),
    ]
    for message in messages:
        assert decode(encode(message)) == message
    for junk in (b"", b"[]", b"{", b'{"fork": 1, "argv": [], "env": {}}', b'{"exited": "x"}'):
        with pytest.raises(ForkMessageError):
            decode(junk)
    with pytest.raises(ForkMessageError):
        decode(b'{"fork": 1, "argv": ["p"], "env": {"A": 1}}')


def test_a_forked_childs_exit_settles_on_its_code_or_when_nobody_can_report_it() -> None:
    watch = ExitWatch(exited=True)
    assert watch.settled() == (False, None)  # the fork server will report the code
    watch.code, watch.code_known = 3, True
    assert watch.settled() == (True, 3)
    orphan = ExitWatch(server_lost=True)
    assert orphan.settled() == (False, None)  # still running: the fork server died, not it
    orphan.exited = True
    assert orphan.settled() == (True, None)  # gone, and nobody left to say how


def test_start_choice_and_slots() -> None:
    assert choose_start(False, True, True, False) is StartChoice.SPAWN  # fork_server = false
    assert choose_start(True, True, True, True) is StartChoice.FORK
    assert choose_start(True, False, False, False) is StartChoice.WAIT  # the first start
    assert choose_start(True, False, False, True) is StartChoice.SPAWN  # waited: it never came
    assert choose_start(True, False, True, False) is StartChoice.SPAWN  # died: do not wait
    assert start_slots(0, cpus=2) == 8 and start_slots(0, cpus=1) == 4
    assert start_slots(3, cpus=64) == 3


def test_command_line_of_a_forked_child() -> None:
    argv = ["/venv/bin/python", "-m", "streamd.worker", "--camera", "door", "--control-fd", "5"]
    assert with_control_fd(argv, 9)[-2:] == ["--control-fd", "9"]
    assert worker_args(argv) == ["--camera", "door", "--control-fd", "5"]
    area = fit_argv(argv, 80)
    assert len(area) == 80 and area.split(b"\0")[:7] == [a.encode() for a in argv]
    short = fit_argv(argv, 50)  # too long: the interpreter's path gives way first
    assert short.startswith(b"python\0-m\0streamd.worker\0--camera\0door\0") and short[-1] == 0


def test_a_camera_waiting_for_its_start_is_starting_not_stopped() -> None:
    life = Lifecycle(Backoff(0.5, 60.0))
    life.on_start_requested()
    assert life.state is ChildState.STARTING and life.restarts == 0
    life.on_spawned(0.0)
    life.on_exit(1.0, 1, draw=lambda: 0.0)
    life.on_start_requested()  # a restart waiting out its delay stays in backoff
    assert state_of(life) is ChildState.BACKOFF


def state_of(life: Lifecycle) -> ChildState:
    return life.state


def test_a_reset_from_a_child_we_stopped_is_not_news() -> None:
    assert not control_closed_is_news(stopped_by_us=True)
    assert control_closed_is_news(stopped_by_us=False)


# --- real processes ------------------------------------------------------------------
def api(daemon: Daemon) -> dict[str, Any]:
    status, body = daemon.http("/api/cameras")
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def live_pids(daemon: Daemon, ids: list[str]) -> dict[str, int] | None:
    cams = api(daemon)["cameras"]
    if all(cams.get(c, {}).get("state") == "live" for c in ids):
        return {c: int(cams[c]["pid"]) for c in ids}
    return None


def fork_server_pid(daemon: Daemon) -> int:
    info = wait_for(
        lambda: (f := api(daemon).get("fork_server")) and f["state"] == "up" and f,
        20,
        "fork server up",
    )
    return int(info["pid"])


def test_children_are_forked_with_the_names_and_session_of_an_exec(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "door", **SYNTH}])
    pids = wait_for(lambda: live_pids(daemon, ["door"]), 20, "door live")
    pid, server = pids["door"], fork_server_pid(daemon)
    assert api(daemon)["cameras"]["door"]["started_by"] == "fork"
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == server
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"-m") + 1] == b"streamd.worker"
    assert argv[argv.index(b"--camera") + 1] == b"door"
    assert os.getsid(pid) == pid  # its own session, like an exec'd child
    assert streamd_processes(daemon.process.pid)["child:door"] == pid
    metrics = daemon.http("/metrics")[1].decode()
    assert 'streamd_child_started_by{camera="door",method="fork"} 1.0' in metrics
    assert "streamd_forkserver_up 1.0" in metrics


def test_without_the_fork_server_children_are_spawned(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "door", **SYNTH}],
        extra="\n[supervisor]\nfork_server = false\n",
    )
    pid = wait_for(lambda: live_pids(daemon, ["door"]), 20, "door live")["door"]
    answer = api(daemon)
    assert answer["cameras"]["door"]["started_by"] == "spawn" and "fork_server" not in answer
    assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == (
        daemon.process.pid
    )


def test_a_failing_detector_fails_only_its_camera(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    """Plugins load after the fork, in the camera's own child."""
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[
            {"id": "bad", **SYNTH, "detector": "tests.plugins.detectors:broken"},
            {"id": "good", **SYNTH, "detector": "tests.plugins.detectors:FixedBox"},
        ],
    )
    wait_for(lambda: live_pids(daemon, ["bad", "good"]), 20, "both live")
    cams = api(daemon)["cameras"]
    assert cams["bad"]["detector"].startswith("failed") and cams["good"]["detector"] != "none"
    assert not cams["good"]["detector"].startswith("failed")
    assert cams["bad"]["started_by"] == cams["good"]["started_by"] == "fork"


def test_a_killed_fork_server_leaves_cameras_running_and_is_replaced(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": "a", **SYNTH}, {"id": "b", **SYNTH}],
        extra=FAST,
    )
    before = wait_for(lambda: live_pids(daemon, ["a", "b"]), 20, "both live")
    server = fork_server_pid(daemon)
    os.kill(server, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: api(daemon)["fork_server"]["state"] != "up", 5, "fork server noticed")
    os.kill(before["a"], signal.SIGKILL)  # restarted while the fork server is (likely) down
    after = wait_for(
        lambda: (p := live_pids(daemon, ["a", "b"])) and p["a"] != before["a"] and p, 20, "a back"
    )
    print(f"camera a live again {time.monotonic() - killed_at:.2f} s after the fork server died")
    assert after["b"] == before["b"] and pid_alive(before["b"])  # kept running throughout
    new_server = fork_server_pid(daemon)
    assert new_server != server and api(daemon)["fork_server"]["restarts"] >= 1
    assert any(e["event"].startswith("fork server died") for e in daemon.log_events())
    # New children come from the new fork server again.
    os.kill(after["b"], signal.SIGKILL)
    wait_for(
        lambda: (
            (c := api(daemon)["cameras"]["b"])["pid"] not in (None, after["b"])
            and c["started_by"] == "fork"
        ),
        20,
        "b forked again",
    )
    metrics = daemon.http("/metrics")[1].decode()
    assert "streamd_forkserver_restarts_total 1.0" in metrics


def test_no_orphans_when_fork_server_then_supervisor_are_killed(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": "x", **SYNTH}, {"id": "y", **SYNTH}]
    )
    pids = list(wait_for(lambda: live_pids(daemon, ["x", "y"]), 20, "both live").values())
    server = fork_server_pid(daemon)
    os.kill(server, signal.SIGKILL)
    time.sleep(1.0)
    assert all(pid_alive(p) for p in pids)  # the fork server's death is not theirs
    new_server = fork_server_pid(daemon)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(5)
    watched = [*pids, new_server]
    wait_for(lambda: not any(pid_alive(p) for p in watched), 2.0, "children and fork server gone")
    for pid in watched:
        kill_quietly(pid)


def test_the_fork_server_dies_with_the_supervisor(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(redis_url=redis_server.url, cameras=[{"id": "x", **SYNTH}])
    server = fork_server_pid(daemon)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(5)
    try:
        wait_for(lambda: not pid_alive(server), 2.0, "the fork server gone")
    finally:
        kill_quietly(server)


def test_stopping_children_early_logs_no_bad_control_message(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    """Children stopped before they read their spec reset the control socket:
    expected, not "bad control message"."""
    daemon = start_daemon(
        redis_url=redis_server.url, cameras=[{"id": f"c{i}", **SYNTH} for i in range(8)]
    )
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(20) == 0
    events = daemon.log_events()
    assert not [e for e in events if e["event"].startswith("bad control message")]


def test_a_cold_start_of_many_cameras_kills_none_for_being_slow(
    redis_server: RedisServer, start_daemon: Callable[..., Daemon]
) -> None:
    """A hundred cameras' start storm, scaled to CI: 40 cameras with a short
    ``stall_timeout``. Starting is not stalling, and starts are paced."""
    ids = [f"cam{i:02d}" for i in range(40)]
    small = {"source": "synthetic:?width=64&height=48", "fps": 5, "detector": "none"}
    daemon = start_daemon(
        redis_url=redis_server.url,
        cameras=[{"id": c, **small} for c in ids],
        extra="\n[supervisor]\nstall_timeout = 2.0\nrestart_delay_initial = 0.2\n",
    )
    started = time.monotonic()
    wait_for(lambda: live_pids(daemon, ids), 90, "all 40 cameras live")
    print(f"40 cameras live {time.monotonic() - started:.1f} s after the daemon was healthy")
    time.sleep(1.0)
    cams = api(daemon)["cameras"]
    assert sum(c["stalls"] for c in cams.values()) == 0
    assert sum(c["restarts"] for c in cams.values()) == 0
    events = daemon.log_events()
    assert not [e for e in events if e["event"].startswith("camera child stalled")]
    assert not [e for e in events if e["event"].startswith("bad control message")]
