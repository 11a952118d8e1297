"""Which programs a request touches, looked up in its transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from g2p_bridge.models import Disbursement, DisbursementEnvelope

_CHUNK = 5000


def envelope_programs(session: Session, envelope_ids: Iterable[str | None]) -> set[str]:
    """Programs of the envelopes that exist; unknown ids are left to the domain's own refusal."""
    ids = sorted({i for i in envelope_ids if i})
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        found.update(
            session.scalars(
                select(DisbursementEnvelope.program_mnemonic)
                .where(DisbursementEnvelope.id.in_(ids[start : start + _CHUNK]))
                .distinct()
            )
        )
    return found


def disbursement_programs(session: Session, disbursement_ids: Iterable[str | None]) -> set[str]:
    ids = sorted({i for i in disbursement_ids if i})
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        found.update(
            session.scalars(
                select(DisbursementEnvelope.program_mnemonic)
                .join(Disbursement, Disbursement.envelope_id == DisbursementEnvelope.id)
                .where(Disbursement.id.in_(ids[start : start + _CHUNK]))
                .distinct()
            )
        )
    return found


def disbursement_envelopes(
    session: Session, disbursement_ids: Iterable[str | None]
) -> dict[str, str]:
    ids = sorted({i for i in disbursement_ids if i})
    found: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(Disbursement.id, Disbursement.envelope_id).where(
                Disbursement.id.in_(ids[start : start + _CHUNK])
            )
        )
        found.update((disbursement_id, envelope_id) for disbursement_id, envelope_id in rows)
    return found
