"""The registry's and the cluster map's decisions, without Redis or sleeps."""

from __future__ import annotations

import json

from redis.crc import key_slot

from streamd.registry.directory import DirectoryEntry
from streamd.registry.lease import Action, ActionKind, CameraLease, Claim, Role
from streamd.registry.store import CAMERAS_KEY, LEASES_KEY, claims_key, owner_key
from streamd.transport.cluster import SlotMap, node_url


def kinds(actions: list[Action]) -> list[ActionKind]:
    return [a.kind for a in actions]


def test_owner_runs_once_and_renewals_are_quiet() -> None:
    lease = CameraLease("cam", "a")
    assert kinds(lease.on_claim(Claim("a", ("a",)), 0.0)) == [ActionKind.RUN]
    assert lease.role is Role.OWNER
    assert lease.on_claim(Claim("a", ("a",)), 1.0) == []


def test_standby_holds_reports_and_takes_over_when_the_owner_is_gone() -> None:
    lease = CameraLease("cam", "b")
    actions = lease.on_claim(Claim("a", ("a", "b")), 0.0)
    assert kinds(actions) == [ActionKind.HOLD, ActionKind.CONFLICT]
    assert actions[0].owner == "a" and actions[1].nodes == ("a",)
    assert lease.on_claim(Claim("a", ("a", "b")), 1.0) == []  # said once, not every round
    # a's lease ran out: b's claim set the owner key.
    actions = lease.on_claim(Claim("b", ("b",)), 5.0)
    assert kinds(actions) == [ActionKind.RUN, ActionKind.CONFLICT_CLEARED]
    assert lease.role is Role.OWNER


def test_owner_sees_the_other_claimant() -> None:
    lease = CameraLease("cam", "a")
    lease.on_claim(Claim("a", ("a",)), 0.0)
    actions = lease.on_claim(Claim("a", ("a", "b")), 1.0)
    assert kinds(actions) == [ActionKind.CONFLICT] and actions[0].nodes == ("b",)
    assert lease.role is Role.OWNER


def test_unreachable_redis_runs_undecided_cameras_and_keeps_decisions() -> None:
    undecided = CameraLease("cam", "a")
    assert kinds(undecided.on_unreachable(0.0)) == [ActionKind.RUN]
    standby = CameraLease("cam", "b")
    standby.on_claim(Claim("a", ("a", "b")), 0.0)
    assert standby.on_unreachable(10.0) == []
    assert standby.role is Role.STANDBY


def test_registry_keys_share_one_slot() -> None:
    keys = [CAMERAS_KEY, LEASES_KEY, owner_key("x"), claims_key("other.cam")]
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_expired_announcement_is_offline_not_a_ghost() -> None:
    raw = json.dumps({"node": "n1", "state": "live", "last_frame_ms": 5, "name": "Yard"})
    entry = DirectoryEntry.parse("cam", 10_000, raw)
    assert entry is not None
    assert entry.state_at(9_999).value == "live"
    assert entry.state_at(10_000).value == "offline"
    assert entry.to_json(12_000)["lease_left_s"] == 0


def test_malformed_announcements_are_skipped() -> None:
    for raw in ("", "[]", '{"node": "n"}', '{"node": "n", "state": "exploded"}', "{" * 50):
        assert DirectoryEntry.parse("cam", 1, raw) is None


def test_slot_map_finds_masters_and_knows_when_it_is_incomplete() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
        [10923, 16383, [b"127.0.0.1", 7002, b"id2"]],
        [5461, 10922, [b"127.0.0.1", 7001, b"id1"]],
    ]
    slots = SlotMap.from_reply(reply)
    assert slots.complete
    assert slots.master_of_slot(0) == ("127.0.0.1", 7000)
    assert slots.master_of_slot(5461) == ("127.0.0.1", 7001)
    assert slots.master_of_slot(16383) == ("127.0.0.1", 7002)
    assert slots.master_for("video:cam") == slots.master_of_slot(key_slot(b"video:cam"))
    assert len(slots.all_masters()) == 3
    assert not SlotMap.from_reply(reply[:2]).complete
    alone = SlotMap.from_reply([[0, 16383, [b"", 7000, b"id0"]]], asked_host="10.1.2.3")
    assert alone.master_of_slot(42) == ("10.1.2.3", 7000)


def test_node_url_keeps_credentials_and_scheme() -> None:
    assert node_url("redis://:pw@seed:7000/0", "10.0.0.5", 7001) == "redis://:pw@10.0.0.5:7001/0"
    assert node_url("rediss://seed:7000", "::1", 7002) == "rediss://[::1]:7002/0"
