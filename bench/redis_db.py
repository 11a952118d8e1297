"""Give each bench, soak or test run a Redis database of its own on the shared server.

Fixed database numbers made two runs on one machine flush each other's queues. A run now claims
a free database number atomically (``SET NX`` with an expiry on a claim key in database 0), keeps
the claim alive while it runs, flushes the database before use and releases it afterwards. A run
that dies without releasing loses its claim when the expiry passes, so numbers are never leaked
for good.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from types import TracebackType

import redis

HOST, PORT = "127.0.0.1", 6379
CLAIM_PREFIX = "g2p-bridge:redis-db-claim:"
# Database 0 holds the claims (and is what a default configuration uses): never handed out.
# Numbers the older fixed-number runs used (the soak's 9, the suite's 10, 11, 14, the bench's
# 12/13) come last, so a run beside a not yet updated checkout avoids them while others are free.
LEGACY_FIXED = (9, 10, 11, 12, 13, 14)
# Compare-and-delete / compare-and-extend: only the holder's token may touch its claim.
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)


class NoFreeRedisDatabase(RuntimeError):
    """Every database number on the server is claimed by another run."""


def _database_count(client: redis.Redis) -> int:
    try:
        configured = client.config_get("databases").get("databases")
    except redis.ResponseError:  # CONFIG may be renamed or disabled on a locked-down server
        configured = None
    return int(configured) if configured else 16


def _candidates(count: int) -> list[int]:
    numbers = range(1, count)
    return [n for n in numbers if n not in LEGACY_FIXED] + [n for n in numbers if n in LEGACY_FIXED]


class RedisDatabaseClaim:
    """One claimed database number; ``url`` is the broker URL to hand to the processes."""

    def __init__(self, db: int, token: str, ttl_seconds: float, host: str, port: int) -> None:
        self.db, self.host, self.port = db, host, port
        self._token = token
        self._ttl_ms = int(ttl_seconds * 1000)
        self._stop = threading.Event()
        self._renewer = threading.Thread(
            target=self._keep_alive, name=f"redis-db-{db}-claim", daemon=True
        )
        self._renewer.start()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    @property
    def key(self) -> str:
        return f"{CLAIM_PREFIX}{self.db}"

    def _admin(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=0, socket_timeout=10)

    def _keep_alive(self) -> None:
        # Renew at a third of the expiry: two renewals may fail (a busy machine, a Redis hiccup)
        # before another run could take the number.
        while not self._stop.wait(self._ttl_ms / 3000):
            with contextlib.suppress(redis.RedisError), self._admin() as client:
                client.eval(_RENEW, 1, self.key, self._token, self._ttl_ms)

    def held(self) -> bool:
        with self._admin() as client:
            return bool(client.get(self.key) == self._token.encode())

    def flush(self) -> None:
        with redis.Redis(host=self.host, port=self.port, db=self.db, socket_timeout=10) as client:
            client.flushdb()

    def release(self) -> None:
        """Flush what the run left in its database and give the number back (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._renewer.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            if self.held():
                self.flush()
            with self._admin() as client:
                client.eval(_RELEASE, 1, self.key, self._token)

    def __enter__(self) -> RedisDatabaseClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def claim_redis_db(
    ttl_seconds: float = 120.0, host: str = HOST, port: int = PORT
) -> RedisDatabaseClaim:
    """Claim a free database number, flushed and ready; release it (or use ``with``) when done.

    Empty databases are preferred: a non-empty unclaimed one may belong to a run that does not
    claim (an older checkout), so it is taken only when nothing else is free."""
    token = secrets.token_hex(16)
    ttl_ms = int(ttl_seconds * 1000)
    with redis.Redis(host=host, port=port, db=0, socket_timeout=10) as admin:
        candidates = _candidates(_database_count(admin))
        for only_empty in (True, False):
            for db in candidates:
                if only_empty:
                    with redis.Redis(host=host, port=port, db=db, socket_timeout=10) as probe:
                        if probe.dbsize():
                            continue
                if admin.set(f"{CLAIM_PREFIX}{db}", token, nx=True, px=ttl_ms):
                    claim = RedisDatabaseClaim(db, token, ttl_seconds, host, port)
                    claim.flush()
                    return claim
    raise NoFreeRedisDatabase(f"every Redis database on {host}:{port} is claimed by another run")
