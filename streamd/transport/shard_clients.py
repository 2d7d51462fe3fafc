"""A plain client for the Redis that serves a name: ``url`` itself without a
cluster; with one, the master of the name's slot (``Topology``).

For commands that are not frames (kept events, pushed frames, stored configs):
one pooled client per master, made on first use. After a command fails the
caller says so (``failed``) and the next call reads the slot map again, so a
failover or a moved slot costs one failed request, not a restart. Clients of
masters no longer in the map are closed: at most one client per master.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from streamd.transport.cluster import Topology, TopologyError, plain_client


class ShardClients:
    def __init__(self, topology: Topology, *, max_connections: int = 2) -> None:
        self.topology = topology
        self.max_connections = max_connections
        self._clients: dict[str, aioredis.Redis] = {}
        self._stale = True  # read the map before the first command

    async def for_name(self, name: str) -> aioredis.Redis:
        """The client for the key or shard channel ``name``; ``RedisError`` if
        no node gives a usable map."""
        if self.topology.cluster and (self._stale or self.topology.slots is None):
            await self.topology.refresh()
            self._stale = False
            masters = set(self.topology.master_urls())
            for gone in [u for u in self._clients if u not in masters]:
                await self._clients.pop(gone).aclose()
        url = self.topology.url_for(name)
        if url is None:
            raise TopologyError(f"no master serves {name!r}")
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = plain_client(url, max_connections=self.max_connections)
        return client

    def failed(self) -> None:
        """A command failed: read the slot map again before the next one."""
        self._stale = True

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
