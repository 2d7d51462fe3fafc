"""Detection events that are kept: the Redis stream ``streamd:events`` with its
snapshots (``redis_log``), the embedded ring and directory (``local_log``), and
the pure parts both share (``records``: ids, entries, queries)."""
