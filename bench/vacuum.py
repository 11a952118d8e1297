"""The bridge database's size once the run's dead rows are gone: after a plain ``VACUUM``
(what autovacuum would reach: dead tuples become free space, the files keep their length) and
after ``VACUUM FULL`` (every table and index rewritten with its live rows only: what the data
itself takes). Per disbursement, with the largest relations, so a reader sees where the bytes
are. Measured after the checks, before the floor adds its own tables."""

from __future__ import annotations

import time
from typing import Any

_LARGEST = """
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r'
ORDER BY 2 DESC LIMIT 6
"""


def vacuumed_sizes(libpq_url: str, n: int) -> dict[str, Any]:
    import psycopg

    figures: dict[str, Any] = {}
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        for label, command in (("vacuum", "VACUUM"), ("vacuum_full", "VACUUM FULL")):
            started = time.monotonic()
            conn.execute(command)
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            size = int(row[0]) if row else 0
            figures[label] = {
                "seconds": round(time.monotonic() - started, 1),
                "mb": round(size / 1024**2, 1),
                "bytes_per_disbursement": round(size / n) if n else None,
            }
        figures["largest_after_full_mb"] = {
            name: round(int(size) / 1024**2, 1) for name, size in conn.execute(_LARGEST)
        }
    return figures
