"""Callback delivery in the bench: a receiving PBMS on 127.0.0.1 subscribed to the bench's
program, and ``callbacks_after_s``: from the last result (every disbursement final) to the
last callback the PBMS acknowledged, read from the outbox's delivery timestamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.postgres import Db
from g2p_bridge.pbms_receiver import ReceivingPBMS
from g2p_bridge.signing import CallbackSigner, generate_private_pem


def new_signing_key() -> tuple[str, dict[str, Any]]:
    """A throwaway key for the bridge processes' environment, and its public key set."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = generate_private_pem()
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("generated key is not Ed25519")
    return pem, CallbackSigner(key).jwks()


def start_receiver(
    jwks: dict[str, Any], bridge_url: str, program: str, headers: Any
) -> ReceivingPBMS:
    pbms = ReceivingPBMS(jwks).start()
    with httpx.Client(base_url=bridge_url, timeout=60, headers=headers) as http:
        response = http.put(f"/programs/{program}/callback", json={"callback_url": pbms.url})
        response.raise_for_status()
    return pbms


def _as_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def wait_delivered(
    db: Db, where: str, ids: list[str], timeout: float, stall: float, poll: float
) -> dict[str, Any]:
    """Polls (bounded) until every queued callback of the envelopes was delivered and each
    envelope's summary was written; the figures of the outbox then."""
    deadline = time.monotonic() + timeout
    last_pending, last_change = -1, time.monotonic()
    figures: dict[str, Any] = {}
    while True:
        pending = int(
            db.one(
                f"SELECT count(*) FROM callback_events WHERE {where} AND delivered_at IS NULL",
                *ids,
            )
            or 0
        )
        unsettled = int(
            db.one(
                f"SELECT count(*) FROM callback_streams WHERE {where} AND summary_written = %s",
                *ids,
                False,
            )
            or 0
        )
        now = time.monotonic()
        if pending != last_pending:
            last_pending, last_change = pending, now
        if pending == 0 and unsettled == 0:
            break
        if now > deadline or now - last_change > stall:
            figures["callbacks_wait_error"] = f"{pending} undelivered, {unsettled} unsettled"
            break
        time.sleep(poll)
    count, last_delivered, attempts = db.rows(
        f"SELECT count(*), max(delivered_at), sum(attempts) FROM callback_events WHERE {where}",
        *ids,
    )[0]
    figures.update(
        callbacks=int(count or 0),
        callback_attempts=int(attempts or 0),
        last_callback_delivered_epoch=_as_epoch(last_delivered),
    )
    return figures
