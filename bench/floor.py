"""The floor a run is measured against, taken on the same server in the same run once the
system has stopped: one COPY of N rows shaped like the bridge's disbursements (same columns,
same indexes) and one set-based ``UPDATE ... FROM`` of all N of them, the cost of a stage
transition done in a single statement. A pipeline that only did that much work, once each way,
could not be faster on this server; the ratios say how far above it the run was."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.sampling import loadavg

_TABLE = "bench_floor_disbursements"
_IDS = "bench_floor_ids"
_COLUMNS = (
    "id, envelope_id, mis_reference_number, beneficiary_id, beneficiary_name, amount, "
    "narrative, financial_address, receipt_at, cancelled, state, updated_at"
)


def measure_floor(libpq_url: str, n: int) -> dict[str, Any]:
    """Seconds for the COPY and for the UPDATE; the tables are dropped afterwards."""
    import psycopg

    now = datetime.now(UTC)
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {_TABLE}, {_IDS}")
        # LIKE ... INCLUDING ALL: the primary key and every index of the real table, no FKs.
        conn.execute(f"CREATE TABLE {_TABLE} (LIKE disbursements INCLUDING ALL)")
        try:
            started = time.monotonic()
            statement = f"COPY {_TABLE} ({_COLUMNS}) FROM STDIN"
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                for i in range(n):
                    copy.write_row(
                        (
                            f"floor-{i:012d}",
                            "floor-envelope",
                            f"mis-{i}",
                            f"beneficiary-{i:09d}",
                            f"Beneficiary {i}",
                            Decimal(100 + i % 900) / 2,
                            "November cash transfer",
                            f"account:ACC{i:08d}@OTHERBANK.BR{i % 3}",
                            now,
                            False,
                            "RESOLVED",
                            now,
                        )
                    )
            copy_s = time.monotonic() - started
            conn.execute(f"CREATE TABLE {_IDS} AS SELECT id FROM {_TABLE}")
            conn.execute(f"ANALYZE {_TABLE}")
            conn.execute(f"ANALYZE {_IDS}")
            started = time.monotonic()
            conn.execute(
                f"UPDATE {_TABLE} AS d SET state = 'SHIPPED', shipped_at = now(), "
                f"updated_at = now() FROM {_IDS} AS s WHERE d.id = s.id"
            )
            update_s = time.monotonic() - started
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {_TABLE}, {_IDS}")
    return {
        "n": n,
        "copy_s": round(copy_s, 2),
        "update_from_s": round(update_s, 2),
        "loadavg": loadavg(),
    }


def floor_ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """Measured time over the floor: ingest against the COPY, ingest-to-reconciled against the
    UPDATE, and the two together against both."""
    floor = result.get("floor") or {}
    copy_s, update_s = floor.get("copy_s"), floor.get("update_from_s")
    ingest_s, settle_s = result.get("ingest_s"), result.get("reconciled_after_s")

    def ratio(measured: float | None, bound: float | None) -> float | None:
        if measured is None or not bound:
            return None
        return round(measured / bound, 1)

    return {
        "ingest_over_copy": ratio(ingest_s, copy_s),
        "settle_over_update": ratio(settle_s, update_s),
        "total_over_floor": ratio(
            None if ingest_s is None or settle_s is None else ingest_s + settle_s,
            None if copy_s is None or update_s is None else copy_s + update_s,
        ),
    }
