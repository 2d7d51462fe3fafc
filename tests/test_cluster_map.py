"""The cluster map's pure parts (issue 19): which nodes a map names, and which
seeds the next read tries, in what order. No sockets."""

from __future__ import annotations

from streamd.transport.cluster import Seeds, SlotMap, url_node

URL = "redis://:pw@10.0.0.1:7000/0"  # the configured node (a master at first)

# 3 masters with one replica each, as CLUSTER SLOTS gives them (ranges unsorted).
REPLY = [
    [5461, 10922, [b"10.0.0.2", 7000, b"m2"], [b"10.0.0.5", 7000, b"r2"]],
    [0, 5460, [b"10.0.0.1", 7000, b"m1"], [b"10.0.0.4", 7000, b"r1"]],
    [10923, 16383, [b"10.0.0.3", 7000, b"m3"], [b"10.0.0.6", 7000, b"r3"]],
]
MASTERS = [("10.0.0.1", 7000), ("10.0.0.2", 7000), ("10.0.0.3", 7000)]
REPLICAS = [("10.0.0.4", 7000), ("10.0.0.5", 7000), ("10.0.0.6", 7000)]

# The same cluster after 10.0.0.1 died and its replica 10.0.0.4 took over: the
# dead node is no longer listed.
AFTER_FAILOVER = [
    [0, 5460, [b"10.0.0.4", 7000, b"r1"]],
    REPLY[0],
    REPLY[2],
]


def nodes_of(order: list[tuple[tuple[str, int] | None, str]]) -> list[tuple[str, int] | None]:
    return [node for node, _url in order]


def test_slot_map_names_masters_then_replicas() -> None:
    slots = SlotMap.from_reply(REPLY)
    assert slots.complete
    assert slots.master_of_slot(0) == MASTERS[0]
    assert slots.replicas[0] == (REPLICAS[0],)
    assert slots.nodes() == (*MASTERS, *REPLICAS)
    # A node that never learned its own address lists itself without a host.
    alone = SlotMap.from_reply([[0, 16383, [b"", 7000, b"m"], [b"", 7001, b"r"]]], "10.9.9.9")
    assert alone.nodes() == (("10.9.9.9", 7000), ("10.9.9.9", 7001))


def test_before_any_map_only_the_configured_seeds_are_tried() -> None:
    seeds = Seeds((URL, "redis://:pw@10.0.0.2:7000/0"))
    assert [url for _node, url in seeds.order(URL)] == [URL, "redis://:pw@10.0.0.2:7000/0"]


def test_every_node_of_a_map_is_a_seed_with_the_configured_credentials() -> None:
    seeds = Seeds((URL,)).answered(("10.0.0.1", 7000), SlotMap.from_reply(REPLY))
    order = seeds.order(URL)
    # The node that answered last first; every master and replica; the configured
    # URL once (it is the same node as the first master).
    assert nodes_of(order) == [*MASTERS, *REPLICAS]
    assert order[4] == (("10.0.0.5", 7000), "redis://:pw@10.0.0.5:7000/0")


def test_the_node_that_answered_last_is_asked_first() -> None:
    seeds = Seeds((URL,)).answered(("10.0.0.6", 7000), SlotMap.from_reply(REPLY))
    assert nodes_of(seeds.order(URL))[0] == ("10.0.0.6", 7000)


def test_a_dead_configured_node_is_tried_last_not_first() -> None:
    seeds = Seeds((URL,)).answered(("10.0.0.1", 7000), SlotMap.from_reply(REPLY))
    seeds = seeds.unusable(("10.0.0.1", 7000))
    order = nodes_of(seeds.order(URL))
    assert order[-1] == ("10.0.0.1", 7000)
    assert order[:5] == [*MASTERS[1:], *REPLICAS]


def test_a_newer_map_replaces_the_learned_nodes_but_never_the_configured_ones() -> None:
    seeds = Seeds((URL,)).answered(("10.0.0.1", 7000), SlotMap.from_reply(REPLY))
    seeds = seeds.unusable(("10.0.0.1", 7000))
    seeds = seeds.answered(("10.0.0.2", 7000), SlotMap.from_reply(AFTER_FAILOVER))
    order = nodes_of(seeds.order(URL))
    assert order[0] == ("10.0.0.2", 7000)
    assert set(order[1:5]) == {("10.0.0.3", 7000), ("10.0.0.4", 7000), *REPLICAS[1:]}
    # The configured node is no longer in the map, but stays a seed (last: it failed).
    assert order[-1] == ("10.0.0.1", 7000)
    assert len(order) == 6


def test_failures_are_forgotten_for_nodes_no_longer_known() -> None:
    seeds = Seeds((URL,)).answered(("10.0.0.1", 7000), SlotMap.from_reply(REPLY))
    seeds = seeds.unusable(("10.0.0.5", 7000))
    after = [[0, 5460, [b"10.0.0.1", 7000, b"m1"]], [5461, 16383, [b"10.0.0.2", 7000, b"m2"]]]
    seeds = seeds.answered(("10.0.0.2", 7000), SlotMap.from_reply(after))
    assert seeds.failed == frozenset()
    # An answer clears the answering node's own failure.
    seeds = seeds.unusable(("10.0.0.1", 7000))
    assert seeds.answered(("10.0.0.1", 7000), SlotMap.from_reply(after)).failed == frozenset()


def test_an_incomplete_map_adds_its_nodes_and_defers_the_node_that_gave_it() -> None:
    seeds = Seeds((URL,))
    partial = SlotMap.from_reply(REPLY[:2])
    assert not partial.complete
    seeds = seeds.unusable(("10.0.0.1", 7000), partial)
    order = nodes_of(seeds.order(URL))
    assert order[-1] == ("10.0.0.1", 7000)
    assert set(order[:-1]) == {("10.0.0.2", 7000), ("10.0.0.5", 7000), ("10.0.0.4", 7000)}


def test_url_node_names_host_and_port_but_not_a_unix_socket() -> None:
    assert url_node("rediss://user:pw@cache.example:7001/0") == ("cache.example", 7001)
    assert url_node("redis://10.0.0.1") == ("10.0.0.1", 6379)
    assert url_node("unix:///run/redis.sock") is None
    seeds = Seeds(("unix:///run/redis.sock", URL))
    assert [url for _node, url in seeds.order(URL)] == ["unix:///run/redis.sock", URL]
