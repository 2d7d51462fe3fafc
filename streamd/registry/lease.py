"""Who publishes a camera, decided from what Redis answered (pure: ``now`` passed in).

Each node that has a camera configured claims it every ``lease / 3`` seconds:
the claim script (``registry.store``) renews the owner key when it is ours, sets
it when nobody holds it (``SET NX PX``), and lists every node that claimed the
camera within one lease. ``CameraLease`` turns those answers into what the node
must do: run the camera's child, hold it back because another node owns it, and
report (or clear) a conflict. The owner key expires by itself when its node
dies, so the next claim of a standby node wins and it takes over.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(enum.StrEnum):
    UNKNOWN = "unknown"  # no answer from Redis yet
    OWNER = "owner"
    STANDBY = "standby"  # configured here too, but another node owns and publishes it


@dataclass(frozen=True)
class Claim:
    """Redis' answer to one claim: the owner now, and every node claiming it."""

    owner: str
    claimants: tuple[str, ...]


class ActionKind(enum.Enum):
    RUN = "run"  # start (or keep) this node's child
    HOLD = "hold"  # stop this node's child: ``owner`` publishes
    CONFLICT = "conflict"  # other nodes configure the same id (``nodes``)
    CONFLICT_CLEARED = "conflict_cleared"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    camera_id: str
    owner: str | None = None
    nodes: tuple[str, ...] = ()


@dataclass
class CameraLease:
    camera_id: str
    node: str
    role: Role = Role.UNKNOWN
    owner: str | None = None
    confirmed_at: float | None = None  # the last claim Redis answered
    others: tuple[str, ...] = field(default=())  # other nodes claiming the same id

    def on_claim(self, claim: Claim, now: float) -> list[Action]:
        actions: list[Action] = []
        self.confirmed_at = now
        if claim.owner == self.node:
            if self.role is not Role.OWNER:
                actions.append(Action(ActionKind.RUN, self.camera_id, owner=self.node))
            self.role = Role.OWNER
        elif self.role is not Role.STANDBY or claim.owner != self.owner:
            actions.append(Action(ActionKind.HOLD, self.camera_id, owner=claim.owner))
            self.role = Role.STANDBY
        self.owner = claim.owner
        others = tuple(sorted(set(claim.claimants) - {self.node} | _other(claim.owner, self.node)))
        if others != self.others:
            kind = ActionKind.CONFLICT if others else ActionKind.CONFLICT_CLEARED
            actions.append(Action(kind, self.camera_id, owner=claim.owner, nodes=others))
            self.others = others
        return actions

    def on_unreachable(self, now: float) -> list[Action]:
        """Redis did not answer. A camera never decided runs (as without a
        registry: frames reach the local gateway); a decided one stays as it is
        (a standby cannot tell the owner died; an owner cannot publish anyway)."""
        if self.role is Role.UNKNOWN:
            self.role = Role.OWNER
            return [Action(ActionKind.RUN, self.camera_id, owner=None)]
        return []


def _other(owner: str, node: str) -> set[str]:
    return set() if owner == node else {owner}
