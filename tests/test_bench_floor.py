"""The bench's floor: a COPY and an UPDATE ... FROM of N disbursement-shaped rows on the run's
own server, leaving nothing behind; and the ratios a result reports against it."""

from __future__ import annotations

from bench.floor import floor_ratios, measure_floor
from sqlalchemy import create_engine, inspect, text


def test_floor_measures_both_passes_and_leaves_no_table(postgres_url: str) -> None:
    floor = measure_floor(postgres_url.replace("postgresql+psycopg://", "postgresql://"), 3000)
    assert floor["n"] == 3000
    assert floor["copy_s"] >= 0 and floor["update_from_s"] >= 0
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            assert not {"bench_floor_disbursements", "bench_floor_ids"} & tables
            assert conn.execute(text("SELECT count(*) FROM disbursements")).scalar() == 0
    finally:
        engine.dispose()


def test_floor_ratios() -> None:
    result = {
        "ingest_s": 20.0,
        "reconciled_after_s": 30.0,
        "floor": {"copy_s": 2.0, "update_from_s": 3.0},
    }
    assert floor_ratios(result) == {
        "ingest_over_copy": 10.0,
        "settle_over_update": 10.0,
        "total_over_floor": 10.0,
    }
    assert floor_ratios({"ingest_s": 1.0}) == {
        "ingest_over_copy": None,
        "settle_over_update": None,
        "total_over_floor": None,
    }
