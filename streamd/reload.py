"""What a reload changes (``Daemon.reload`` carries it out): the config read
again off the loop, then settled against the running one (pure): access
settings apply at once, the listening socket and the Redis connections wait
for a restart, and the log and the API's ``detail`` say which is which."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from streamd.config import Config, ConfigError, load_config
from streamd.config.server import reload_server
from streamd.lifecycle import SpecDiff

log = structlog.get_logger("streamd")


@dataclass(frozen=True)
class Settled:
    config: Config  # what runs from now on
    applied: tuple[str, ...]  # [server] keys that changed and apply at once
    pending: tuple[str, ...]  # keys that changed and wait for a restart


def settle(old: Config, new: Config) -> Settled:
    """The listening socket and the Redis connections stay as started; access
    settings (tokens, origins, limits) apply at once: a revoked token stops."""
    server = reload_server(old.server, new.server)
    pending = (*server.pending, *(["redis"] if old.redis != new.redis else []))
    return Settled(replace(new, server=server.server, redis=old.redis), server.applied, pending)


async def read_config(path: Path, env: Mapping[str, str]) -> Config | ConfigError:
    """The config and its drop-ins, read off the loop; an invalid one is logged
    with file, key and reason (the running one stays)."""
    try:
        return await asyncio.to_thread(load_config, path, env)
    except ConfigError as exc:
        log.error(
            "reload refused: invalid config; keeping the running one",
            file=exc.source,
            key=exc.key,
            reason=exc.problem,
        )
        return exc


def reloaded(diff: SpecDiff, settled: Settled) -> str:
    """Log what a reload did; the same, short, for the API's ``detail``."""
    log.info(
        "config reloaded",
        added=list(diff.added),
        removed=list(diff.removed),
        changed=list(diff.changed),
        unchanged=len(diff.unchanged),
        applied=list(settled.applied),
        not_applied=list(settled.pending),
    )
    return reload_summary(diff.added, diff.removed, diff.changed, settled.applied, settled.pending)


def reload_summary(
    added: Collection[str],
    removed: Collection[str],
    changed: Collection[str],
    applied: Collection[str],
    pending: Collection[str],
) -> str:
    """What a reload did, for the API's ``detail`` and ``streamd reload``'s output."""
    summary = f"added {len(added)}, removed {len(removed)}, changed {len(changed)}"
    if applied:
        summary += f"; applied: {', '.join(applied)}"
    if pending:
        summary += f"; NOT applied until restart: {', '.join(pending)}"
    return summary
