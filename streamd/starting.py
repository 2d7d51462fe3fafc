"""How camera children are started (pure decisions): by fork from the warm fork
server or by exec, and how many may be starting at once.

A child is *starting* from its launch until its first heartbeat; it holds one
of ``start_slots`` meanwhile, so a cold start of a hundred cameras is paced by
what the machine can take instead of a hundred interpreters fighting for two
cores (and missing ``stall_timeout``: the stall timer only begins at the first
heartbeat; a start has its own deadline, ``start_timeout``).
"""

from __future__ import annotations

import os
from enum import StrEnum


class StartMethod(StrEnum):
    FORK = "fork"  # forked from the warm fork server
    SPAWN = "spawn"  # exec of a fresh interpreter (no fork server, or it is down)


class StartChoice(StrEnum):
    FORK = "fork"
    SPAWN = "spawn"
    WAIT = "wait"  # the first fork server is still importing: worth waiting for


def choose_start(enabled: bool, up: bool, ever_ready: bool, waited: bool) -> StartChoice:
    """Fork when the fork server serves; at the very first start wait for it
    (once, bounded by the caller); after it has died, spawn until it is back."""
    if not enabled:
        return StartChoice.SPAWN
    if up:
        return StartChoice.FORK
    if not ever_ready and not waited:
        return StartChoice.WAIT
    return StartChoice.SPAWN


def start_slots(configured: int, cpus: int | None = None) -> int:
    """Children allowed to be starting at once: ``[supervisor] max_starting``, or
    (0) four per CPU: a fork costs tens of milliseconds of one core, and an exec
    (the fallback) is paced by its own deadline rather than by this."""
    if configured > 0:
        return configured
    return max(4, 4 * (cpus if cpus is not None else os.cpu_count() or 1))
