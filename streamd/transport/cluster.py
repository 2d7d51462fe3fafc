"""Where a key or a channel lives: one Redis, or the master of its slot in a
Redis Cluster.

streamd keeps its own small view of the cluster (``CLUSTER SLOTS``, asked of any
node that answers) instead of redis-py's cluster client: every connection it
makes is then a plain RESP2 connection to one master (the subscriber's fast
drain path, pipelines to one shard), and after a failover each part simply asks
``Topology.refresh`` again and reconnects to the promoted replica.

Every node a map names (masters and replicas) is a seed for the next read, as
in redis-py's ``RedisCluster`` (``dynamic_startup_nodes``), Lettuce and Jedis:
once the node named in ``[redis] url`` dies, the others still know the map.

``SlotMap`` and ``Seeds`` are pure; ``Topology`` does the I/O, and is the one
place every part (publisher, demand, registry, gateway subscriber) reads the
map through.
"""

from __future__ import annotations

import asyncio
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
Node = tuple[str, int]  # host, port


class TopologyError(RedisError):
    """No node answered CLUSTER SLOTS with a map covering every slot."""


@dataclass(frozen=True)
class SlotMap:
    """Slot ranges, their masters and replicas, from a ``CLUSTER SLOTS`` reply (pure)."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    masters: tuple[Node, ...]
    replicas: tuple[tuple[Node, ...], ...] = ()  # per range, as ``masters``

    @classmethod
    def from_reply(cls, reply: Sequence[Sequence[object]], asked_host: str = "") -> SlotMap:
        """``asked_host``: the node we asked, for nodes it lists without a host
        (a node that never learned its own address says "")."""
        rows = []
        for entry in reply:
            start, end = int(str(entry[0])), int(str(entry[1]))
            nodes = [_node(n, asked_host) for n in entry[2:]]
            rows.append((start, end, nodes[0], tuple(nodes[1:])))
        rows.sort()
        return cls(
            tuple(r[0] for r in rows),
            tuple(r[1] for r in rows),
            tuple(r[2] for r in rows),
            tuple(r[3] for r in rows),
        )

    @property
    def complete(self) -> bool:
        covered = sum(end - start + 1 for start, end in zip(self.starts, self.ends, strict=True))
        return covered == SLOTS

    def master_of_slot(self, slot: int) -> Node | None:
        index = bisect.bisect_right(self.starts, slot) - 1
        if index >= 0 and self.starts[index] <= slot <= self.ends[index]:
            return self.masters[index]
        return None

    def master_for(self, name: str) -> Node | None:
        """The master serving a key or shard channel (hash tags respected)."""
        return self.master_of_slot(key_slot(name.encode()))

    def all_masters(self) -> list[Node]:
        return sorted(set(self.masters))

    def nodes(self) -> tuple[Node, ...]:
        """Every node the map names: masters first (they answer for sure while
        the map holds), then replicas."""
        replicas = sorted({r for row in self.replicas for r in row})
        return tuple(dict.fromkeys([*self.all_masters(), *replicas]))


def _node(entry: object, asked_host: str) -> Node:
    assert isinstance(entry, list | tuple)
    host = entry[0].decode() if isinstance(entry[0], bytes) else str(entry[0])
    return (host or asked_host, int(str(entry[1])))


def url_node(url: str) -> Node | None:
    """The host and port a configured URL names (None for a unix socket)."""
    parts = urlsplit(url)
    if parts.scheme == "unix" or not parts.hostname:
        return None
    return (parts.hostname, parts.port or 6379)


@dataclass(frozen=True)
class Seeds:
    """Which nodes to ask for the cluster map, in what order (pure).

    ``configured``: the URLs of ``[redis] url`` and ``startup_nodes``, kept for
    good (they outlive a cluster rebuilt on new addresses). ``learned``: every
    node of the last complete map, which replaces the previous one (a node the
    cluster no longer lists is forgotten, as redis-py does). Order: the node that
    gave the last map, the learned nodes, the configured ones; nodes whose last
    attempt failed go last (redis-py's habit), so a dead seed costs no time while
    another answers.
    """

    configured: tuple[str, ...]
    learned: tuple[Node, ...] = ()
    last_good: Node | None = None
    failed: frozenset[Node] = frozenset()

    def order(self, template: str) -> list[tuple[Node | None, str]]:
        """``(node, url)`` to try; learned nodes get ``template``'s scheme and
        credentials (``node_url``)."""
        listed: dict[Node | str, tuple[Node | None, str]] = {}
        learned = [self.last_good] if self.last_good is not None else []
        for node in [*learned, *self.learned]:
            listed.setdefault(node, (node, node_url(template, *node)))
        for url in self.configured:
            named = url_node(url)
            listed.setdefault(url if named is None else named, (named, url))
        ordered = list(listed.values())
        return [c for c in ordered if c[0] not in self.failed] + [
            c for c in ordered if c[0] in self.failed
        ]

    def answered(self, node: Node | None, slots: SlotMap) -> Seeds:
        """``node`` gave a complete map: its nodes are the seeds from now on."""
        # Failures are remembered only for nodes still known, so the set stays bounded.
        known = {*slots.nodes(), *(url_node(url) for url in self.configured)}
        failed = frozenset(n for n in self.failed if n in known and n != node)
        return Seeds(self.configured, slots.nodes(), node, failed)

    def unusable(self, node: Node | None, slots: SlotMap | None = None) -> Seeds:
        """``node`` failed, or answered with an incomplete map (a failover under
        way): try it last next time; the nodes it named are merged in as seeds."""
        learned = self.learned
        if slots is not None:
            learned = tuple(dict.fromkeys([*learned, *slots.nodes()]))
        failed = self.failed | {node} if node is not None else self.failed
        return Seeds(self.configured, learned, self.last_good, failed)


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
        self.seeds = Seeds(tuple(seeds) or (url,))
        self.slots: SlotMap | None = None
        self.refreshes = 0  # successful topology reads (the first, then one per change)
        # One read at a time: the parts sharing this map (subscriber, registry,
        # directory) all notice a failover at once and would each read it.
        self._lock = asyncio.Lock()
        self._reads = 0
        self._last_error: str | None = None

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
        """Read the slot map from the first seed that gives a complete one. Raises
        ``TopologyError`` (a ``RedisError``) if none does; the last map stays in
        use meanwhile (parts whose master still answers carry on)."""
        if not self.cluster:
            return
        reads = self._reads
        async with self._lock:
            if self._reads != reads:  # read by another part while this one waited
                if self._last_error is not None:
                    raise TopologyError(self._last_error)
                return
            try:
                await self._read()
                self._last_error = None
            except TopologyError as exc:
                self._last_error = str(exc)
                raise
            finally:
                self._reads += 1

    async def _read(self) -> None:
        last: str = "no node to ask"
        for node, url in self.seeds.order(self.url):
            client = plain_client(url, max_connections=1)
            try:
                reply = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                slots = SlotMap.from_reply(reply, urlsplit(url).hostname or "")
            except (RedisError, OSError, ValueError, AssertionError, IndexError) as exc:
                self.seeds = self.seeds.unusable(node)
                last = f"{redact_url(url)}: {exc or type(exc).__name__}"
                continue
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            if slots.complete:
                self.seeds = self.seeds.answered(node, slots)
                if slots != self.slots:
                    self.refreshes += 1
                    log.info(
                        "redis cluster map read",
                        masters=len(slots.all_masters()),
                        nodes=len(slots.nodes()),
                        source=redact_url(url),
                    )
                self.slots = slots
                return
            self.seeds = self.seeds.unusable(node, slots)
            last = f"{redact_url(url)}: slots not all covered (failover under way?)"
        raise TopologyError(f"no usable cluster map ({last})")
