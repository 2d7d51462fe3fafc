"""Where a key or a channel lives: one Redis, or the master of its slot in a
Redis Cluster.

streamd keeps its own small view of the cluster (``CLUSTER SLOTS``, asked of any
node that answers) instead of redis-py's cluster client: every connection it
makes is then a plain RESP2 connection to one master (the subscriber's fast
drain path, pipelines to one shard), and after a failover each part simply asks
``Topology.refresh`` again and reconnects to the promoted replica.

``SlotMap`` is pure; ``Topology`` does the I/O.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from streamd.redact import redact_url

log = structlog.get_logger("streamd.cluster")
SLOTS = 16384


class TopologyError(RedisError):
    """No node answered CLUSTER SLOTS with a map covering every slot."""


@dataclass(frozen=True)
class SlotMap:
    """Slot ranges and their masters, from a ``CLUSTER SLOTS`` reply (pure)."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    masters: tuple[tuple[str, int], ...]

    @classmethod
    def from_reply(cls, reply: Sequence[Sequence[object]], asked_host: str = "") -> SlotMap:
        """``asked_host``: the node we asked, for masters it lists without a host
        (a node that never learned its own address says "")."""
        rows = []
        for entry in reply:
            start, end, master = int(str(entry[0])), int(str(entry[1])), entry[2]
            assert isinstance(master, list | tuple)
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            host = host or asked_host
            rows.append((start, end, (host, int(str(master[1])))))
        rows.sort()
        return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))

    @property
    def complete(self) -> bool:
        covered = sum(end - start + 1 for start, end in zip(self.starts, self.ends, strict=True))
        return covered == SLOTS

    def master_of_slot(self, slot: int) -> tuple[str, int] | None:
        index = bisect.bisect_right(self.starts, slot) - 1
        if index >= 0 and self.starts[index] <= slot <= self.ends[index]:
            return self.masters[index]
        return None

    def master_for(self, name: str) -> tuple[str, int] | None:
        """The master serving a key or shard channel (hash tags respected)."""
        return self.master_of_slot(key_slot(name.encode()))

    def all_masters(self) -> list[tuple[str, int]]:
        return sorted(set(self.masters))


def node_url(seed: str, host: str, port: int) -> str:
    """``seed``'s scheme, credentials and database with another host and port."""
    parts = urlsplit(seed)
    userinfo = parts.netloc.rpartition("@")[0]
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{userinfo}@{hostport}" if userinfo else hostport
    return urlunsplit((parts.scheme, netloc, "/0", parts.query, ""))


def plain_client(url: str, *, max_connections: int = 2) -> aioredis.Redis:
    """A pooled RESP2 client that fails fast: streamd runs its own reconnects."""
    # TCP keepalive only for TCP: redis-py's unix socket connection refuses the option.
    keepalive = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return aioredis.Redis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        **keepalive,
    )


class Topology:
    """The URL serving a name: ``url`` itself without a cluster; with one, the
    master of the name's slot, from the last successful ``refresh``."""

    def __init__(self, url: str, *, cluster: bool, seeds: Sequence[str] = ()) -> None:
        self.url = url
        self.cluster = cluster
        self.seeds = tuple(seeds) or (url,)
        self.slots: SlotMap | None = None
        self.refreshes = 0  # successful topology reads (the first, then one per change)

    def url_for(self, name: str) -> str | None:
        """None until the cluster's map is known (call ``refresh``)."""
        if not self.cluster:
            return self.url
        if self.slots is None:
            return None
        master = self.slots.master_for(name)
        return None if master is None else node_url(self.url, *master)

    def master_urls(self) -> list[str]:
        if not self.cluster:
            return [self.url]
        masters = [] if self.slots is None else self.slots.all_masters()
        return [node_url(self.url, *master) for master in masters]

    async def refresh(self) -> None:
        """Read the slot map from the first node that gives a complete one.
        Raises ``TopologyError`` (a ``RedisError``) if none does."""
        if not self.cluster:
            return
        candidates = list(dict.fromkeys([*self.seeds, *self.master_urls()]))
        last: str = "no node to ask"
        for url in candidates:
            client = plain_client(url, max_connections=1)
            try:
                reply = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                slots = SlotMap.from_reply(reply, urlsplit(url).hostname or "")
            except (RedisError, OSError, ValueError, AssertionError, IndexError) as exc:
                last = f"{redact_url(url)}: {exc or type(exc).__name__}"
                continue
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            if slots.complete:
                if slots != self.slots:
                    self.refreshes += 1
                    log.info("redis cluster map read", masters=len(slots.all_masters()))
                self.slots = slots
                return
            last = f"{redact_url(url)}: slots not all covered (failover under way?)"
        raise TopologyError(f"no usable cluster map ({last})")
