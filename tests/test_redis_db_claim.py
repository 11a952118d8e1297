"""Runs on one machine claim distinct Redis databases and give them back (bench/redis_db.py)."""

from __future__ import annotations

import time

import pytest
import redis
from bench.redis_db import CLAIM_PREFIX, claim_redis_db

pytestmark = pytest.mark.broker


def admin() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=6379, db=0, socket_timeout=5)


def test_concurrent_claims_get_distinct_flushed_databases() -> None:
    with claim_redis_db() as first, claim_redis_db() as second:
        assert first.db != second.db
        assert 0 not in (first.db, second.db)
        assert first.held() and second.held()
        with redis.Redis.from_url(first.url) as client:
            assert client.dbsize() == 0
            client.set("left-behind", "1")
        held_db = first.db
    with admin() as client:
        assert client.get(f"{CLAIM_PREFIX}{held_db}") is None
    # Released means flushed too: the next run starts from an empty database.
    with redis.Redis(host="127.0.0.1", port=6379, db=held_db) as client:
        assert client.dbsize() == 0


def test_a_release_never_drops_someone_elses_claim() -> None:
    claim = claim_redis_db()
    with admin() as client:
        # The claim expired and another run took the number: our release must leave it alone.
        client.set(claim.key, "another-run")
    claim.release()
    claim.release()  # idempotent
    with admin() as client:
        assert client.get(claim.key) == b"another-run"
        client.delete(claim.key)


def test_the_claim_is_kept_alive_while_the_run_lasts() -> None:
    with claim_redis_db(ttl_seconds=0.6) as claim:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # three expiries: only renewals keep it
            assert claim.held()
            time.sleep(0.1)
        with admin() as client:
            assert 0 < client.pttl(claim.key) <= 600


def test_an_unclaimed_database_in_use_is_avoided_while_others_are_free() -> None:
    with claim_redis_db() as probe:
        busy = probe.db
    with redis.Redis(host="127.0.0.1", port=6379, db=busy) as client:
        client.set("someone-elses-queue", "1")
        try:
            with claim_redis_db() as claim:
                assert claim.db != busy
            assert client.get("someone-elses-queue") == b"1"
        finally:
            client.delete("someone-elses-queue")
