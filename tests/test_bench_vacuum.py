"""The bench's size after the run: VACUUM, then VACUUM FULL, give the bridge database's size
with its dead rows freed and then gone, per disbursement."""

from __future__ import annotations

from bench.vacuum import vacuumed_sizes
from sqlalchemy import create_engine, text


def test_vacuum_full_gives_back_what_dead_rows_took(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE bench_vacuum_probe (id int, pad text)"))
            conn.execute(
                text(
                    "INSERT INTO bench_vacuum_probe "
                    "SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g"
                )
            )
            conn.execute(text("DELETE FROM bench_vacuum_probe WHERE id <= 19000"))
        figures = vacuumed_sizes(
            postgres_url.replace("postgresql+psycopg://", "postgresql://"), 1000
        )
    finally:
        engine.dispose()
    plain, full = figures["vacuum"], figures["vacuum_full"]
    # The 19,000 deleted rows (about 10 MB) lie before the live ones: VACUUM cannot cut the
    # file short, FULL rewrites it.
    assert full["mb"] < plain["mb"] - 5
    assert full["bytes_per_disbursement"] < plain["bytes_per_disbursement"]
    assert "bench_vacuum_probe" in figures["largest_after_full_mb"]
