"""An envelope submitted as a payroll file (CSV or XLSX) by a program's staff, for the small
programs and pilots that have no PBMS.

Every line is held to the API's own rules: it is made into a G2P Connect ``DisbursementPayload``
(the schema's types, lengths and character sets) and checked with ``disbursements.item_errors``;
the envelope is made by ``envelopes.create_envelope`` and its disbursements stored by
``disbursements.create_disbursements``, chunk by chunk. The file is read twice, streaming: the
first pass checks every line and stores nothing, so a faulty file is refused with every faulty
line, column and reason; the second makes the envelope and its disbursements, and any refusal
there (a disbursement id used before) rolls the whole transaction back. Memory holds one chunk.

The file's SHA-256 is recorded (``PayrollFile``). The same bytes submitted again are answered
with the envelope they made, and nothing new is stored: the safe answer to a retried upload and
to last month's file sent again by mistake alike. A file whose envelope was rejected must be
changed to be submitted anew. Such an envelope always waits for four-eyes approval
(core/approvals.py), whatever its program's threshold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import IO, Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from g2p_bridge.core import audit, disbursements, envelopes
from g2p_bridge.core.errors import BridgeError, ErrorCode, InvalidRequest
from g2p_bridge.formats import payroll
from g2p_bridge.models import BenefitProgram, Disbursement, DisbursementEnvelope, PayrollFile
from g2p_bridge.models.base import new_id
from g2p_bridge.money import format_amount
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, forbidden_character

CHUNK = 1000
# A file with more faulty lines than this is reported up to here: enough to see the pattern.
MAX_ERRORS = 500
# The payroll column named by each field of a disbursement, for the error messages.
_COLUMN_OF = {fieldname: column for column, fieldname in payroll.COLUMNS.items()}


@dataclass(frozen=True)
class EnvelopeFields:
    """What the form or the command line gives beside the file. ``expected_count`` and
    ``expected_total`` are control totals: given, the file must add up to them (a truncated
    or doubled file is caught); left out, the envelope declares what the file holds."""

    program: str
    cycle_code: str
    schedule_date: date
    frequency: str = "OnDemand"
    envelope_id: str | None = None
    expected_count: int | None = None
    expected_total: Decimal | None = None


@dataclass(frozen=True)
class LineError:
    line: int  # 0: about the file or the envelope as a whole
    column: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "reason": self.reason}


class PayrollFileRefused(InvalidRequest):
    """The file is refused and nothing was stored; ``lines`` says where and why."""

    def __init__(self, lines: list[LineError], more: bool = False) -> None:
        shown = lines[:MAX_ERRORS]
        counted = f"{len(shown)}{'+' if more or len(lines) > MAX_ERRORS else ''}"
        super().__init__(
            ErrorCode.PAYROLL_FILE_INVALID,
            f"the payroll file has {counted} error(s); nothing was stored",
            {str(e.line): [f"{e.column}: {e.reason}" if e.column else e.reason] for e in shown},
        )
        self.lines = shown
        self.truncated = more or len(lines) > MAX_ERRORS


@dataclass(frozen=True)
class Submission:
    envelope_id: str
    sha256: str
    file_format: str
    row_count: int
    total: Decimal
    currency: str
    # True when these bytes had been submitted before: nothing new was stored.
    resubmitted: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "disbursement_envelope_id": self.envelope_id,
            "file_sha256": self.sha256,
            "file_format": self.file_format,
            "number_of_disbursements": self.row_count,
            "total_disbursement_amount": format_amount(self.total, self.currency),
            "currency": self.currency,
            "resubmitted": self.resubmitted,
            "approval_required": True,
        }


def _reason(error: ErrorDetails) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def _payload(
    row: payroll.Row, envelope_id: str
) -> tuple[DisbursementPayload | None, list[LineError]]:
    """The row as the API would receive it, or what is wrong with it."""
    problems = [LineError(row.line, column, reason) for column, reason in row.problems]
    for column, value in row.cells.items():
        bad = forbidden_character(value)
        if bad is not None:
            problems.append(LineError(row.line, column, f"holds the control character {bad}"))
    if problems:
        return None, problems
    data: dict[str, Any] = {
        payroll.COLUMNS[column]: value for column, value in row.cells.items() if value
    }
    data["disbursement_envelope_id"] = envelope_id
    try:
        item = DisbursementPayload.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            where = str(error["loc"][0]) if error.get("loc") else ""
            problems.append(LineError(row.line, _COLUMN_OF.get(where, where), _reason(error)))
        return None, problems
    return item, problems


_REASONS: dict[str, str] = {
    ErrorCode.INVALID_DISBURSEMENT_AMOUNT: "must be more than 0, with at most the currency's "
    "decimals",
    ErrorCode.INVALID_BENEFICIARY_ID: "is required (at most 256 characters)",
    ErrorCode.INVALID_BENEFICIARY_NAME: "is required (at most 256 characters)",
    ErrorCode.INVALID_NARRATIVE: "is required (at most 512 characters)",
    ErrorCode.INVALID_DISBURSEMENT_ID: "is at most 64 characters",
    ErrorCode.DUPLICATE_DISBURSEMENT: "is used by another line or by a disbursement already stored",
}


def _coded(line: int, code: str) -> LineError:
    field = disbursements.ERROR_FIELDS.get(code, "")
    return LineError(line, _COLUMN_OF.get(field, field), f"{_REASONS.get(code, code)} ({code})")


def _chunks(rows: Iterator[payroll.Row], size: int) -> Iterator[list[payroll.Row]]:
    chunk: list[payroll.Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read(source: IO[bytes], file_format: str) -> Iterator[payroll.Row]:
    source.seek(0)
    try:
        yield from payroll.read_rows(source, file_format)
    except payroll.FileUnreadable as exc:
        raise PayrollFileRefused([LineError(exc.line, exc.column, exc.reason)]) from None


def _check(
    source: IO[bytes], file_format: str, envelope_id: str, currency: str, max_rows: int
) -> tuple[int, Decimal]:
    """The first pass: every line checked, nothing stored. The count and total of the file."""
    errors: list[LineError] = []
    count, total = 0, Decimal(0)
    for row in _read(source, file_format):
        count += 1
        if count > max_rows:
            errors.append(LineError(row.line, "", f"a payroll file holds at most {max_rows} lines"))
            break
        item, problems = _payload(row, envelope_id)
        if item is not None:
            problems += [
                _coded(row.line, code) for code in disbursements.item_errors(item, currency)
            ]
            if not problems and item.disbursement_amount is not None:
                total += item.disbursement_amount
        errors += problems
        if len(errors) > MAX_ERRORS:
            raise PayrollFileRefused(errors, more=True)
    if count == 0 and not errors:
        errors.append(LineError(0, "", "the file holds no disbursements"))
    if errors:
        raise PayrollFileRefused(errors)
    return count, total


def _control_totals(fields: EnvelopeFields, count: int, total: Decimal) -> None:
    problems = []
    if fields.expected_count is not None and fields.expected_count != count:
        problems.append(
            LineError(0, "", f"the file holds {count} disbursements, not {fields.expected_count}")
        )
    if fields.expected_total is not None and fields.expected_total != total:
        problems.append(
            LineError(0, "", f"the file's amounts add up to {total}, not {fields.expected_total}")
        )
    if problems:
        raise PayrollFileRefused(problems)


def existing(session: Session, sha256: str) -> Submission | None:
    known = session.get(PayrollFile, sha256)
    if known is None:
        return None
    envelope = envelopes.get_envelope(session, known.envelope_id)
    return Submission(
        envelope.id,
        sha256,
        known.file_format,
        known.row_count,
        envelope.total_disbursement_amount,
        envelope.currency,
        resubmitted=True,
    )


def submit(
    session: Session,
    source: IO[bytes],
    sha256: str,
    size: int,
    file_name: str | None,
    fields: EnvelopeFields,
    submitter: str,
    today: date,
    max_rows: int,
) -> Submission:
    """Makes the envelope of a clean file, or refuses the file (PayrollFileRefused, with each
    faulty line) having stored nothing. ``source`` is seekable: it is read twice. The caller's
    transaction holds all of it; commit only when this returns."""
    known = existing(session, sha256)
    if known is not None:
        audit.record(
            session,
            "envelope.submit_file",
            "envelope",
            known.envelope_id,
            outcome="duplicate",
            envelope_id=known.envelope_id,
            detail={"file_sha256": sha256, "file_name": file_name},
        )
        return known
    program = session.get(BenefitProgram, fields.program) if fields.program else None
    if program is None:
        raise InvalidRequest(
            ErrorCode.INVALID_PROGRAM_MNEMONIC, f"no benefit program {fields.program!r}"
        )
    currency = program.sponsor_bank_account_currency
    source.seek(0)
    file_format = payroll.sniff_format(source.read(8), file_name)
    envelope_id = fields.envelope_id or new_id()
    count, total = _check(source, file_format, envelope_id, currency, max_rows)
    _control_totals(fields, count, total)

    payload = EnvelopePayload(
        disbursement_envelope_id=envelope_id,
        benefit_program_mnemonic=program.mnemonic,
        disbursement_frequency=fields.frequency,
        cycle_code_mnemonic=fields.cycle_code,
        number_of_beneficiaries=count,  # corrected below to the distinct beneficiaries
        number_of_disbursements=count,
        total_disbursement_amount=total,
        disbursement_currency_code=currency,
        disbursement_schedule_date=fields.schedule_date,
    )
    envelope = envelopes.create_envelope(session, payload, submitter, today)
    # Before the disbursements: a second upload of the same bytes racing this one fails here,
    # on the key, rather than after storing thousands of rows.
    session.add(
        PayrollFile(
            sha256=sha256,
            envelope_id=envelope.id,
            file_name=file_name[:256] if file_name else None,
            file_format=file_format,
            size_bytes=size,
            row_count=count,
            submitted_by=submitter[:128],
        )
    )
    session.flush()

    errors: list[LineError] = []
    for chunk in _chunks(_read(source, file_format), CHUNK):
        items = [item for item, _ in (_payload(row, envelope.id) for row in chunk) if item]
        if len(items) != len(chunk):
            # The file changed between the passes (it is ours, spooled: it cannot), or a rule
            # reads differently twice; either way nothing is stored.
            raise PayrollFileRefused([LineError(chunk[0].line, "", "the file changed while read")])
        try:
            disbursements.create_disbursements(session, items, len(items))
        except BridgeError as refused:
            for index, codes in refused.item_errors.items():
                line = chunk[int(index)].line if index.isdigit() else 0
                errors += [_coded(line, code) for code in codes]
            if not refused.item_errors:
                errors.append(LineError(chunk[0].line, "", refused.message))
            if len(errors) > MAX_ERRORS:
                raise PayrollFileRefused(errors, more=True) from None
    if errors:
        raise PayrollFileRefused(errors)

    beneficiaries = session.scalar(
        select(func.count(func.distinct(Disbursement.beneficiary_id))).where(
            Disbursement.envelope_id == envelope.id
        )
    )
    session.execute(
        update(DisbursementEnvelope)
        .where(DisbursementEnvelope.id == envelope.id)
        .values(number_of_beneficiaries=beneficiaries or count)
    )
    audit.record(
        session,
        "envelope.submit_file",
        "envelope",
        envelope.id,
        envelope_id=envelope.id,
        actor=submitter,
        detail={
            "file_sha256": sha256,
            "file_name": file_name,
            "file_format": file_format,
            "size_bytes": size,
            "number_of_disbursements": count,
            "total_disbursement_amount": str(total),
            "currency": currency,
        },
    )
    return Submission(envelope.id, sha256, file_format, count, total, currency, resubmitted=False)
