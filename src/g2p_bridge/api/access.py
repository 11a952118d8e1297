"""Which programs a request touches, and the guard of the operator (non G2P Connect) routes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from g2p_bridge.api.handling import session_factory
from g2p_bridge.api.security import principal_of, record_refusal
from g2p_bridge.api.wire import refusal
from g2p_bridge.core.errors import Forbidden
from g2p_bridge.db import transaction
from g2p_bridge.formats.mt940 import statement_accounts
from g2p_bridge.models import BenefitProgram, Disbursement, DisbursementEnvelope

T = TypeVar("T")
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


def statement_bank_codes(session: Session, content: bytes) -> set[str]:
    """The sponsor bank codes of the programs whose accounts the statement's ``:25:`` fields
    name; accounts of no program are left to processing, which records them as an error.

    The accounts are read by the MT940 parser itself (issue 10): a separate sniffer read
    files differently from the processing (a CR-only file showed it no ``:25:`` at all, so it
    authorized the upload for any bank), and every account is checked, however many."""
    accounts = sorted(statement_accounts(content))
    found: set[str] = set()
    for start in range(0, len(accounts), _CHUNK):
        found.update(
            session.scalars(
                select(BenefitProgram.sponsor_bank_code)
                .where(
                    BenefitProgram.sponsor_bank_account_number.in_(accounts[start : start + _CHUNK])
                )
                .distinct()
            )
        )
    return found


async def guarded(
    request: Request, action: str, run: Callable[[Session], T], render: Callable[[T], Response]
) -> Response:
    """Runs ``run`` in one transaction; an authorization refusal it raises is audited and
    answered with a 403 ``rjct``."""
    factory = session_factory(request)

    def work() -> T:
        with transaction(factory) as session:
            return run(session)

    try:
        result = await run_in_threadpool(work)
    except Forbidden as error:
        await run_in_threadpool(record_refusal, factory, principal_of(request), action, error)
        return refusal(error, {"action": action})
    return render(result)
