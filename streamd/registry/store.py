"""The camera registry's keys and scripts in Redis (I/O only; decisions live in
``lease`` and ``directory``).

Every key shares the hash tag ``{registry}``, so in a Redis Cluster they sit in
one slot: each node's claim-and-announce round is one pipeline to one master,
and the scripts may touch several keys. Times are the Redis server's (``TIME``
inside the scripts), so nodes' clocks need not agree.

- ``streamd:{registry}:owner:ID``       the owning node's name, ``PX`` lease
- ``streamd:{registry}:claims:ID``      zset: node → claim expiry (ms)
- ``streamd:{registry}:cameras``        hash: camera id → announcement JSON
- ``streamd:{registry}:leases``         zset: camera id → announcement expiry (ms)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from streamd.registry.lease import Claim

PREFIX = "streamd:{registry}:"
CAMERAS_KEY = PREFIX + "cameras"
LEASES_KEY = PREFIX + "leases"
MAX_ENTRIES = 10_000  # cameras a gateway reads from the registry, at most
RETAIN_MS = 3_600_000  # an expired announcement is listed as offline this long

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS: owner, claims. ARGV: node, lease_ms. Returns {owner, claimant...}.
CLAIM = (
    _NOW
    + """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  owner = ARGV[1]
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local out = {owner}
for _, node in ipairs(redis.call('ZRANGE', KEYS[2], 0, 15)) do table.insert(out, node) end
return out
"""
)

# KEYS: cameras, leases. ARGV: lease_ms, then camera id / JSON pairs.
ANNOUNCE = (
    _NOW
    + """
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[i])
end
return now
"""
)

# KEYS: owner, claims, leases, cameras. ARGV: node, camera id, unlist. Hand over
# now: a clean stop marks our cameras expired (other nodes' lists show them
# offline); a camera a reload removed ("unlist" = 1) is taken off the list.
RELEASE = (
    _NOW
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[3] == '1' then
    redis.call('ZREM', KEYS[3], ARGV[2])
    redis.call('HDEL', KEYS[4], ARGV[2])
  else
    redis.call('ZADD', KEYS[3], now, ARGV[2])
  end
end
return 1
"""
)

# KEYS: cameras, leases. ARGV: retain_ms, max entries. Returns {now, id, expiry, json, ...}.
READ = (
    _NOW
    + """
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, 1000)
for _, id in ipairs(old) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local out = {now}
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for i = 1, #ids, 2 do
  table.insert(out, ids[i])
  table.insert(out, ids[i + 1])
  table.insert(out, redis.call('HGET', KEYS[1], ids[i]) or '')
end
return out
"""
)


def owner_key(camera_id: str) -> str:
    return f"{PREFIX}owner:{camera_id}"


def claims_key(camera_id: str) -> str:
    return f"{PREFIX}claims:{camera_id}"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def claim(
    client: aioredis.Redis, camera_ids: Iterable[str], node: str, lease_ms: int
) -> dict[str, Claim]:
    ids = list(camera_ids)
    if not ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for camera_id in ids:
            pipe.eval(CLAIM, 2, owner_key(camera_id), claims_key(camera_id), node, lease_ms)
        replies = await pipe.execute()
    return {
        camera_id: Claim(_text(reply[0]), tuple(_text(n) for n in reply[1:]))
        for camera_id, reply in zip(ids, replies, strict=True)
    }


async def announce(
    client: aioredis.Redis, entries: Mapping[str, Mapping[str, Any]], lease_ms: int
) -> None:
    if not entries:
        return
    args: list[Any] = [lease_ms]
    for camera_id, entry in entries.items():
        args += [camera_id, json.dumps(entry, separators=(",", ":"))]
    await client.eval(ANNOUNCE, 2, CAMERAS_KEY, LEASES_KEY, *args)


async def release(
    client: aioredis.Redis, camera_ids: Iterable[str], node: str, *, unlist: bool = False
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for camera_id in camera_ids:
            keys = (owner_key(camera_id), claims_key(camera_id), LEASES_KEY, CAMERAS_KEY)
            pipe.eval(RELEASE, 4, *keys, node, camera_id, "1" if unlist else "0")
        await pipe.execute()


@dataclass(frozen=True)
class Snapshot:
    """The registry as read at ``now_ms`` (Redis' clock)."""

    now_ms: int
    entries: dict[str, tuple[int, str]]  # camera id → (expiry ms, announcement JSON)


async def read(client: aioredis.Redis) -> Snapshot:
    reply = await client.eval(READ, 2, CAMERAS_KEY, LEASES_KEY, RETAIN_MS, MAX_ENTRIES)
    now_ms = int(reply[0])
    entries: dict[str, tuple[int, str]] = {}
    rest = reply[1:]
    for index in range(0, len(rest) - 2, 3):
        entries[_text(rest[index])] = (int(float(_text(rest[index + 1]))), _text(rest[index + 2]))
    return Snapshot(now_ms, entries)
