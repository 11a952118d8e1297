"""Benefit program configuration: which sponsor bank account pays a program, and how its
beneficiaries' financial addresses are resolved."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from g2p_bridge.core.errors import Conflict, ErrorCode, InvalidRequest, NotFound
from g2p_bridge.models import BenefitProgram
from g2p_bridge.money import has_valid_minor_units, is_known_currency
from g2p_bridge.schemas import ProgramPayload


def _validated_fields(payload: ProgramPayload, partial: bool) -> dict[str, object]:
    fields = payload.model_dump(
        exclude_unset=partial, exclude={"program_mnemonic", "benefit_program_mnemonic"}
    )
    problems = []
    for required in (
        "sponsor_bank_code",
        "sponsor_bank_account_number",
        "sponsor_bank_account_currency",
    ):
        if (required in fields or not partial) and not fields.get(required):
            problems.append(f"{required} is required")
    currency = fields.get("sponsor_bank_account_currency")
    if currency and not is_known_currency(str(currency)):
        problems.append(f"unknown ISO 4217 currency {currency!r}")
    for optional in ("id_mapper_resolution_required", "approval_required", "approval_threshold"):
        if fields.get(optional) is None:
            fields.pop(optional, None)
    threshold = fields.get("approval_threshold")
    if isinstance(threshold, Decimal) and not (
        threshold >= 0 and has_valid_minor_units(threshold, str(currency or "XXX"))
    ):
        problems.append("approval_threshold must be an amount of 0 or more")
    if problems:
        raise InvalidRequest(ErrorCode.INVALID_PROGRAM_CONFIGURATION, "; ".join(problems))
    return fields


def _ensure_account_free(session: Session, account_number: object, mnemonic: str) -> None:
    owner = session.scalar(
        select(BenefitProgram.mnemonic).where(
            BenefitProgram.sponsor_bank_account_number == account_number,
            BenefitProgram.mnemonic != mnemonic,
        )
    )
    if owner:
        raise Conflict(
            ErrorCode.INVALID_ACCOUNT_NUMBER,
            f"account {account_number} already pays program {owner}; statements could not "
            "be attributed",
        )


def create_program(session: Session, payload: ProgramPayload) -> BenefitProgram:
    mnemonic = payload.program_mnemonic
    if not mnemonic:
        raise InvalidRequest(
            ErrorCode.INVALID_PROGRAM_MNEMONIC, "benefit_program_mnemonic is required"
        )
    fields = _validated_fields(payload, partial=False)
    if session.get(BenefitProgram, mnemonic) is not None:
        raise Conflict(
            ErrorCode.BENEFIT_PROGRAM_CONFIGURATION_ALREADY_EXISTS,
            f"program {mnemonic} already exists",
        )
    _ensure_account_free(session, fields["sponsor_bank_account_number"], mnemonic)
    program = BenefitProgram(mnemonic=mnemonic, **fields)
    session.add(program)
    session.flush()
    return program


def update_program(session: Session, mnemonic: str, payload: ProgramPayload) -> BenefitProgram:
    program = get_program(session, mnemonic, for_update=True)
    fields = _validated_fields(payload, partial=True)
    if "sponsor_bank_account_number" in fields:
        _ensure_account_free(session, fields["sponsor_bank_account_number"], mnemonic)
    for name, value in fields.items():
        setattr(program, name, value)
    session.flush()
    return program


def get_program(session: Session, mnemonic: str, for_update: bool = False) -> BenefitProgram:
    program = session.get(BenefitProgram, mnemonic, with_for_update=for_update)
    if program is None:
        raise NotFound(ErrorCode.INVALID_PROGRAM_MNEMONIC, f"no benefit program {mnemonic!r}")
    return program


def list_programs(session: Session) -> list[BenefitProgram]:
    return list(session.scalars(select(BenefitProgram).order_by(BenefitProgram.mnemonic)))
