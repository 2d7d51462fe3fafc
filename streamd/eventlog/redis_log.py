"""Events kept in Redis: the child appends (one Lua script: ``XADD`` trimmed by
count and by age, the snapshot under ``streamd:snapshot:{id}`` with the
retention as TTL, at most ``max_snapshots`` of them), the gateway reads
(``XRANGE`` scans bounded per request; junk entries skipped and counted).

The script names the snapshot keys itself (they derive from the new entry's id).
In a Redis Cluster every key carries the hash tag ``{events}`` (``EventKeys``),
so the keys it derives live in the slot of the keys it declares: the script
runs on that slot's master, and the gateway reads from it (``ShardClients``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streamd.config import EventsConfig
from streamd.eventlog.records import (
    SINGLE_KEYS,
    EventKeys,
    EventQuery,
    EventRecord,
    Page,
    PageBuilder,
    decode_entry,
    entry_fields,
    parse_stream_id,
)
from streamd.transport.shard_clients import ShardClients

EXACT_TRIM_BELOW = 1000  # smaller streams are trimmed exactly ("~" keeps whole 100-entry nodes)
SCAN_BATCH = 200
MAX_SCAN = 5000  # entries one API request may examine (the cursor continues)

_APPEND = """
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local id
if ARGV[2] == '1' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', unpack(fields))
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
end
local retention = tonumber(ARGV[3])
local minid = tonumber(string.match(id, '^(%d+)')) - retention
if minid > 0 then redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', minid)) end
local keep = tonumber(ARGV[4])
if ARGV[6] ~= '' and keep > 0 then
  redis.call('SET', ARGV[5] .. id, ARGV[6], 'PX', retention)
  redis.call('RPUSH', KEYS[2], id)
  redis.call('PEXPIRE', KEYS[2], retention)
end
local evicted = 0 -- at most 100 per call (a lowered max_snapshots catches up gradually)
while redis.call('LLEN', KEYS[2]) > keep and evicted < 100 do
  local old = redis.call('LPOP', KEYS[2])
  redis.call('DEL', ARGV[5] .. old)
  evicted = evicted + 1
end
return id
"""


class RedisEventWriter:
    """The child's side: append one event (and its snapshot) to the stream."""

    def __init__(self, config: EventsConfig, keys: EventKeys = SINGLE_KEYS) -> None:
        self.config = config
        self.keys = keys

    async def append(
        self, client: aioredis.Redis, event: dict[str, Any], snapshot: bytes | None
    ) -> str:
        config = self.config
        fields = entry_fields(event, snapshot is not None and config.max_snapshots > 0)
        args: list[Any] = [
            config.max_events,
            "1" if config.max_events < EXACT_TRIM_BELOW else "0",
            int(config.retention * 1000),
            config.max_snapshots,
            self.keys.snapshot_prefix,
            snapshot or b"",
        ]
        for name, value in fields.items():
            args += [name, value]
        keys = self.keys
        result = await client.eval(_APPEND, 2, keys.stream, keys.snapshot_index, *args)
        return result.decode() if isinstance(result, bytes) else str(result)


class RedisEventStore:
    """The gateway's side: query, fetch, snapshot (reads only). A failed command
    makes ``clients`` read the cluster's map again before the next request."""

    def __init__(self, clients: ShardClients, keys: EventKeys = SINGLE_KEYS) -> None:
        self.clients = clients
        self.keys = keys
        self.junk = 0  # entries in the stream that were not events (a hostile writer)

    async def _client(self) -> aioredis.Redis:
        return await self.clients.for_name(self.keys.stream)

    async def query(self, query: EventQuery, allowed: Callable[[str], bool]) -> Page:
        try:
            return await self._query(await self._client(), query, allowed)
        except RedisError:
            self.clients.failed()
            raise

    async def _query(
        self, client: aioredis.Redis, query: EventQuery, allowed: Callable[[str], bool]
    ) -> Page:
        builder = PageBuilder(query, allowed, MAX_SCAN)
        start, end = query.start(), query.end()
        while True:
            batch = min(SCAN_BATCH, MAX_SCAN - builder.scanned)
            entries = await client.xrange(self.keys.stream, start, end, count=batch) or []
            for entry_id, fields in entries:
                ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                builder.feed(ident, decode_entry(entry_id, fields))
                if builder.done:
                    break
            exhausted = len(entries) < batch
            if builder.done or exhausted or builder.last_id is None:
                break
            start = "(" + builder.last_id
        page = builder.finish(exhausted and not builder.done)
        self.junk += page.junk
        return page

    async def get(self, event_id: str) -> EventRecord | None:
        if parse_stream_id(event_id) is None:
            return None
        try:
            client = await self._client()
            entries = await client.xrange(self.keys.stream, event_id, event_id, count=1)
        except RedisError:
            self.clients.failed()
            raise
        if not entries:
            return None
        record = decode_entry(*entries[0])
        if record is None:
            self.junk += 1
        return record

    async def snapshot(self, record: EventRecord) -> bytes | None:
        if not record.has_snapshot:
            return None
        try:
            data = await (await self._client()).get(self.keys.snapshot(record.id))
        except RedisError:
            self.clients.failed()
            raise
        return data if isinstance(data, bytes) else None
