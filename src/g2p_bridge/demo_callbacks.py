"""The demo's receiving PBMS: started beside the bridge, subscribed to the demo program, and
asked at the end how many results reached it (``g2p-bridge demo`` prints the figure)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.db import transaction
from g2p_bridge.models import CallbackStream
from g2p_bridge.models.enums import WorkState
from g2p_bridge.pbms_receiver import ReceivingPBMS
from g2p_bridge.settings import Settings
from g2p_bridge.signing import load_signer


@contextmanager
def receiving_pbms(settings: Settings) -> Iterator[ReceivingPBMS]:
    """A PBMS on 127.0.0.1 that trusts the bridge's published key set."""
    with ReceivingPBMS(load_signer(settings).jwks()) as pbms:
        yield pbms


def subscribe(http: httpx.Client, program: str, url: str, admin_token: str) -> None:
    response = http.put(
        f"/programs/{program}/callback",
        json={"callback_url": url},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    response.raise_for_status()


def callbacks_received(
    pbms: ReceivingPBMS,
    session_factory: sessionmaker[Session],
    envelope_id: str,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Waits (bounded) until the envelope's callbacks are all delivered, then what arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with transaction(session_factory) as session:
            row = session.execute(
                select(CallbackStream.state, CallbackStream.summary_written).where(
                    CallbackStream.id == envelope_id
                )
            ).one_or_none()
        if row is not None and row.state == WorkState.DONE and row.summary_written:
            break
        time.sleep(0.2)  # the embedded runner delivers in the background
    got = pbms.received
    return {
        "callbacks": len(got.bodies),
        "results": got.result_count,
        "disbursements": len(got.results),
        "duplicates": got.duplicates,
        "bad_signatures": got.bad_signatures,
    }


def describe(figures: dict[str, Any]) -> str:
    return (
        f"PBMS on 127.0.0.1 received {figures['callbacks']} signed callbacks carrying "
        f"{figures['results']} results for {figures['disbursements']} disbursements "
        f"({figures['duplicates']} duplicates dropped, {figures['bad_signatures']} bad signatures)"
    )
