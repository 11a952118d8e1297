"""The answers that take more than one row, built at the API edge from what core/ returns."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from g2p_bridge.core import disbursements, envelopes
from g2p_bridge.models import AccountStatement, ReconError
from g2p_bridge.schemas import (
    DisbursementStatusPayload,
    EnvelopeStatusPayload,
    ErrorReconPayload,
    ReconPayload,
    ReconRecords,
    StatementPayload,
)


def envelope_status(session: Session, envelope_id: str | None) -> EnvelopeStatusPayload:
    return EnvelopeStatusPayload.model_validate(envelopes.envelope_figures(session, envelope_id))


def disbursement_statuses(session: Session, ids: Sequence[str]) -> list[DisbursementStatusPayload]:
    """Current state and reconciliation records of each id; an unknown id says UNKNOWN."""
    answers = []
    for found in disbursements.disbursement_records(session, ids):
        errors = [ErrorReconPayload.model_validate(e) for e in found.errors]
        if found.row is None:
            # A statement may still name it (a debit for an id we never had): those errors
            # are what the bank said about it, and the PBMS asking needs to see them.
            answers.append(
                DisbursementStatusPayload(
                    disbursement_id=found.disbursement_id,
                    state="UNKNOWN",
                    state_reason="no such disbursement",
                    disbursement_recon_records=ReconRecords(
                        disbursement_recon_payloads=[], disbursement_error_recon_payloads=errors
                    )
                    if errors
                    else None,
                )
            )
            continue
        answer = DisbursementStatusPayload.model_validate(
            found.row, context={"currency": found.currency}
        )
        answer.disbursement_recon_records = ReconRecords(
            disbursement_recon_payloads=[ReconPayload.model_validate(found.recon)]
            if found.recon
            else [],
            disbursement_error_recon_payloads=errors,
        )
        answers.append(answer)
    return answers


def statement_view(
    session: Session, statement: AccountStatement, error_limit: int = 1000
) -> StatementPayload:
    answer = StatementPayload.model_validate(statement)
    answer.errors = [
        ErrorReconPayload.model_validate(e)
        for e in session.scalars(
            select(ReconError)
            .where(ReconError.statement_id == statement.id)
            .order_by(ReconError.id)
            .limit(error_limit)
        )
    ]
    return answer
