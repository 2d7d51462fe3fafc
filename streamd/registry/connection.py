"""One client to the master holding the registry's slot, re-found after a failover."""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis

from streamd.registry.store import CAMERAS_KEY
from streamd.transport.cluster import Topology, TopologyError, plain_client


class RegistryConnection:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._client: aioredis.Redis | None = None
        self._url: str | None = None
        self._stale = False  # a call failed: read the map again before the next one

    async def client(self) -> aioredis.Redis:
        """The client for the registry's master (reading the cluster map if needed)."""
        url = self.topology.url_for(CAMERAS_KEY)
        if url is None or (self._stale and self.topology.cluster):
            await self.topology.refresh()
            self._stale = False
            url = self.topology.url_for(CAMERAS_KEY)
            if url is None:
                raise TopologyError("the registry's slot has no master")
        if self._client is None or url != self._url:
            await self.close()
            self._client, self._url = plain_client(url), url
        return self._client

    async def failed(self) -> None:
        """The last call failed: drop the client and re-read the map next time.
        The map itself is kept: it is shared, and its nodes are the seeds that
        find the new one once the node named in the config is gone."""
        await self.close()
        self._stale = True

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
