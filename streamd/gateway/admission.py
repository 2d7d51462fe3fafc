"""Connection admission (pure bookkeeping; the server applies it at accept time).

Every TCP connection counts toward the viewer limits from accept to close, so
connections still in their handshake, and idle HTTP keep-alive connections,
are bounded as tightly as upgraded viewers: a client cannot hold sockets open
past ``max_viewers_per_address`` by never finishing its request. A connection
over a limit is answered with its status at its first request and closed;
past ``hard_limit`` (a flood) it is dropped at once without an answer.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum


class Refusal(Enum):
    PER_ADDRESS = ("max_viewers_per_address", 429, "too many viewers from this address")
    TOTAL = ("max_viewers", 503, "too many viewers")

    def __init__(self, reason: str, status: int, message: str) -> None:
        self.reason = reason
        self.status = status
        self.message = message


class ConnectionGate:
    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.per_address: Counter[str] = Counter()
        self.refused_open = 0  # refused but not yet closed (bounded by hard_limit)

    @property
    def admitted(self) -> int:
        return sum(self.per_address.values())

    @property
    def hard_limit(self) -> int:
        """Open connections, admitted or refused, past which we drop at once."""
        return 2 * self.max_total + 64

    def flooded(self) -> bool:
        return self.admitted + self.refused_open >= self.hard_limit

    def admit(self, address: str) -> Refusal | None:
        """Count the connection in, or say why not (it then counts as refused_open)."""
        if self.per_address[address] >= self.max_per_address:
            self.refused_open += 1
            return Refusal.PER_ADDRESS
        if self.admitted >= self.max_total:
            self.refused_open += 1
            return Refusal.TOTAL
        self.per_address[address] += 1
        return None

    def release(self, address: str, refusal: Refusal | None) -> None:
        if refusal is not None:
            self.refused_open -= 1
            return
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def limits_changed(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
