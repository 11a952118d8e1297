"""Who may reconcile which account (issue 10, item 1): the accounts a statement names are read
once, by the parser reconciliation uses, and checked against the uploader's bank codes at upload
and again before anything is applied. Every line-ending and framing variant the parser accepts
is tried as another bank's forgery."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from bridge_support import (
    FakeBank,
    counters_match_rows,
    disbursement_items,
    envelope_request,
    fake_context,
    mt940,
)
from g2p_bridge.auth import Principal
from g2p_bridge.core import disbursements, envelopes, programs
from g2p_bridge.core.context import Context
from g2p_bridge.core.statements import process_statement, store_statement
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.formats.mt940 import iter_statement_headers, iter_statements
from g2p_bridge.models import AccountStatement, BenefitProgram, Disbursement, StatementAccount
from g2p_bridge.models.base import utcnow
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload

ACCOUNT_1 = "1000000001"  # PROG1, paid through bank EXAMPLE
ACCOUNT_2 = "2000000002"  # PROG2, paid through bank OTHERBANK
ADMIN = Principal("ops", "admin")
TEN = Decimal("10.00")


@dataclass
class Scene:
    context: Context
    runner: EmbeddedRunner
    d1: str  # a reconciled disbursement of PROG1
    d2: str  # a reconciled disbursement of PROG2: what a forger wants reversed


def add_program(
    session: Any, mnemonic: str, bank: str, account: str, currency: str = "USD"
) -> None:
    programs.create_program(
        session,
        ProgramPayload(
            program_mnemonic=mnemonic,
            sponsor_bank_code=bank,
            sponsor_bank_account_number=account,
            sponsor_bank_account_currency=currency,
            resolver="inline",
            id_mapper_resolution_required=False,
        ),
    )


def add_envelope(session: Any, envelope_id: str, program: str, count: int = 1) -> list[str]:
    body = envelope_request(envelope_id, count=count, total=str(TEN * count), program=program)
    envelopes.create_envelope(
        session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
    )
    items = disbursement_items(envelope_id, count, amount="10.00", prefix=f"d-{envelope_id}")
    stored = disbursements.create_disbursements(
        session, [DisbursementPayload(**i) for i in items], 100_000
    )
    return [d.disbursement_id or "" for d in stored]


def upload(context: Context, text: str | bytes, uploader: Principal = ADMIN) -> str:
    content = text.encode() if isinstance(text, str) else text
    with transaction(context.session_factory) as session:
        return store_statement(session, content, "s.mt940", uploader, 10**7).id


def state_of(context: Context, disbursement_id: str) -> str:
    with transaction(context.session_factory) as session:
        return session.scalars(
            select(Disbursement.state).where(Disbursement.id == disbursement_id)
        ).one()


def statement_row(context: Context, statement_id: str) -> AccountStatement:
    with transaction(context.session_factory) as session:
        row = session.get(AccountStatement, statement_id)
        assert row is not None
        return row


@pytest.fixture
def scene(session_factory) -> Scene:  # type: ignore[no-untyped-def]
    context = fake_context(session_factory, FakeBank())
    context.use_bank("OTHERBANK", FakeBank())
    with transaction(session_factory) as session:
        add_program(session, "PROG1", "EXAMPLE", ACCOUNT_1)
        add_program(session, "PROG2", "OTHERBANK", ACCOUNT_2)
        (d1,) = add_envelope(session, "env-1", "PROG1")
        (d2,) = add_envelope(session, "env-2", "PROG2")
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=30)
    upload(context, mt940(ACCOUNT_1, [("D", d1, TEN, f"/EREF/{d1}")], number=1))
    upload(context, mt940(ACCOUNT_2, [("D", d2, TEN, f"/EREF/{d2}")], number=1))
    assert runner.run_until_idle(timeout=30)
    assert state_of(context, d1) == state_of(context, d2) == "RECONCILED"
    return Scene(context, runner, d1, d2)


def reversal(account: str, disbursement_id: str) -> str:
    """A statement reversing the disbursement, as the bank of ``account`` would write it."""
    entry = ("RD", disbursement_id, TEN, f"/EREF/{disbursement_id}/RTRN/ACCOUNT_CLOSED")
    return mt940(account, [entry], number=2, opening=Decimal("1000000.00") - TEN)


# Each turns PROG2's reversal into a file the old regex read no account from (or LF and CRLF,
# which it did read); the parser reads ACCOUNT_2 from every one of them.
VARIANTS = {
    "lf": lambda text: text,
    "crlf": lambda text: text.replace("\n", "\r\n"),
    "cr-only": lambda text: text.replace("\n", "\r"),
    "stray-space-in-tag": lambda text: text.replace(":25:", ": 25:"),
    "swift-wrapper-same-line": lambda text: text.replace(
        ":20:", "{1:F01EXAMPLEXXXX0000000000}{2:I940EXAMPLEXXXXN}{4::20:"
    ),
    "bom": lambda text: text.replace(":25:", "\ufeff:25:"),
    "soh": lambda text: text.replace(":25:", "\x01:25:"),
    "etx": lambda text: text.replace(":25:", "\x03:25:"),
    "sub": lambda text: text.replace(":25:", "\x1a:25:"),
}


def post(client: Any, token: str, content: bytes) -> Any:
    return client.http.post(
        "/upload_mt940",
        files={"statement_file": ("s.mt940", content, "text/plain")},
        headers={"authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_another_banks_account_is_refused_in_every_framing(scene, client, token, variant) -> None:
    content = VARIANTS[variant](reversal(ACCOUNT_2, scene.d2)).encode()
    # The parser, the one reading of a statement, sees PROG2's account in the file.
    assert {p.account for p in iter_statements(content)} == {ACCOUNT_2}
    for bank_codes in (["EXAMPLE"], []):
        forger = token("bank-example", "bank", bank_codes=bank_codes)
        refused = post(client, forger, content)
        assert refused.status_code == 403, (variant, bank_codes, refused.text)
        assert refused.json()["header"]["status"] == "rjct"
        assert refused.json()["header"]["meta"]["error_code"] == "ACCESS_DENIED"
    assert scene.runner.run_until_idle(timeout=30)
    assert state_of(scene.context, scene.d2) == "RECONCILED"
    # The same file from PROG2's own bank is accepted and applied: the variant is real.
    accepted = post(client, token("bank-other", "bank", bank_codes=["OTHERBANK"]), content)
    assert accepted.status_code == 200, accepted.text
    assert scene.runner.run_until_idle(timeout=30)
    assert state_of(scene.context, scene.d2) == "REVERSED"
    counters_match_rows(scene.context.session_factory)


def test_a_swift_wrapper_inside_a_message_is_refused_for_everyone(scene, client, token) -> None:
    """``{1:...}{4::25:`` in the middle of a statement: the parser reads it as a new message
    opening inside an unfinished one, so the file has no reading at all and nobody's upload
    of it is stored, not even the account's own bank's."""
    content = (
        reversal(ACCOUNT_2, scene.d2)
        .replace(":25:", "{1:F01EXAMPLEXXXX0000000000}{2:I940EXAMPLEXXXXN}{4::25:")
        .encode()
    )
    for bank_codes in (["EXAMPLE"], ["OTHERBANK"]):
        refused = post(client, token("bank-x", "bank", bank_codes=bank_codes), content)
        assert refused.status_code == 422, (bank_codes, refused.text)
        assert refused.json()["header"]["meta"]["error_code"] == "STATEMENT_UNPARSEABLE"
    assert scene.runner.run_until_idle(timeout=30)
    assert state_of(scene.context, scene.d2) == "RECONCILED"


def _empty_page(number: int, account: str) -> str:
    day = utcnow().strftime("%y%m%d")
    return (
        f":20:P{number:06d}\n:25:{account}\n:28C:{number}/1\n"
        f":60F:C{day}USD0,00\n:62F:C{day}USD0,00\n-\n"
    )


def test_an_account_hidden_after_a_thousand_others_is_found(scene, client, token) -> None:
    with transaction(scene.context.session_factory) as session:
        for i in range(1000):
            add_program(session, f"P{i:04d}", "EXAMPLE", f"0{i:09d}")
    pages = "".join(_empty_page(i + 1, f"0{i:09d}") for i in range(1000))
    content = (pages + reversal(ACCOUNT_2, scene.d2)).encode()
    assert len(list(iter_statement_headers(content))) == 1001
    refused = post(client, token("bank-example", "bank", bank_codes=["EXAMPLE"]), content)
    assert refused.status_code == 403, refused.text
    message = refused.json()["header"]["meta"]["error_message"]
    assert ACCOUNT_2 in message and "OTHERBANK" not in message
    assert scene.runner.run_until_idle(timeout=30)
    assert state_of(scene.context, scene.d2) == "RECONCILED"


def test_a_file_naming_accounts_of_two_banks_needs_both(scene, client, token) -> None:
    content = (reversal(ACCOUNT_1, scene.d1) + reversal(ACCOUNT_2, scene.d2)).encode()
    one = post(client, token("bank-example", "bank", bank_codes=["EXAMPLE"]), content)
    assert one.status_code == 403, one.text
    assert scene.runner.run_until_idle(timeout=30)
    assert state_of(scene.context, scene.d1) == state_of(scene.context, scene.d2) == "RECONCILED"
    both = post(client, token("bank-both", "bank", bank_codes=["EXAMPLE", "OTHERBANK"]), content)
    assert both.status_code == 200, both.text
    statement_id = both.json()["statement_id"]
    with transaction(scene.context.session_factory) as session:
        named = set(
            session.scalars(
                select(StatementAccount.account_number).where(
                    StatementAccount.statement_id == statement_id
                )
            )
        )
        row = session.get(AccountStatement, statement_id)
        assert row is not None
        assert (row.uploaded_by, row.uploader_role) == ("bank-both", "bank")
        assert row.uploader_bank_codes == "EXAMPLE OTHERBANK"
    assert named == {ACCOUNT_1, ACCOUNT_2}
    assert scene.runner.run_until_idle(timeout=30)
    assert state_of(scene.context, scene.d1) == state_of(scene.context, scene.d2) == "REVERSED"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (reversal("", "x").encode(), 422, "STATEMENT_UNPARSEABLE"),  # :25: names nothing
        (reversal("9999999999", "x").encode(), 422, "INVALID_ACCOUNT_NUMBER"),
        (b":20:X\n:25:1000000001\n:28C:1\n:60F:C261125USD10,00\n:61:garbage\n", 422, None),
        (b"{1:F01EXAMPLEXXXX0000000000}{2:I940EXAMPLEXXXXN}\n", 422, "STATEMENT_UNPARSEABLE"),
    ],
)
def test_no_account_an_unknown_one_or_no_parse_is_refused_at_upload(
    scene, client, token, content, status, code
) -> None:
    response = post(client, token("bank-example", "bank", bank_codes=["EXAMPLE"]), content)
    assert response.status_code == status, response.text
    assert response.json()["header"]["status"] == "rjct"
    if code:
        assert response.json()["header"]["meta"]["error_code"] == code
    with transaction(scene.context.session_factory) as session:
        assert len(list(session.scalars(select(AccountStatement.id)))) == 2  # the scene's


def test_a_bank_token_with_no_bank_codes_uploads_nothing(scene, client, token) -> None:
    content = reversal(ACCOUNT_1, scene.d1).encode()
    assert post(client, token("bank-none", "bank"), content).status_code == 403
    assert (
        post(client, token("bank-example", "bank", bank_codes=["EXAMPLE"]), content).status_code
        == 200
    )


def test_the_uploaders_authority_is_checked_again_before_applying(scene) -> None:
    other = Principal("bank-other", "bank", bank_codes=frozenset({"OTHERBANK"}))
    statement_id = upload(scene.context, reversal(ACCOUNT_2, scene.d2), other)
    with transaction(scene.context.session_factory) as session:  # moved to another bank since
        session.execute(
            update(BenefitProgram)
            .where(BenefitProgram.mnemonic == "PROG2")
            .values(sponsor_bank_code="EXAMPLE")
        )
    assert process_statement(scene.context, statement_id)
    row = statement_row(scene.context, statement_id)
    assert row.state == "ERROR" and "does not hold bank code 'EXAMPLE'" in (row.error_reason or "")
    assert state_of(scene.context, scene.d2) == "RECONCILED"


def test_a_page_whose_account_was_not_read_at_upload_is_not_applied(scene) -> None:
    other = Principal("bank-other", "bank", bank_codes=frozenset({"OTHERBANK"}))
    statement_id = upload(scene.context, reversal(ACCOUNT_2, scene.d2), other)
    with transaction(scene.context.session_factory) as session:
        session.execute(
            update(StatementAccount)
            .where(StatementAccount.statement_id == statement_id)
            .values(account_number="something-else")
        )
    assert process_statement(scene.context, statement_id)
    row = statement_row(scene.context, statement_id)
    assert row.state == "ERROR" and "not among the accounts read" in (row.error_reason or "")
    assert state_of(scene.context, scene.d2) == "RECONCILED"


def test_a_statement_stored_before_migration_0003_waits_for_an_administrator(scene, client) -> None:
    content = reversal(ACCOUNT_2, scene.d2).encode()
    with transaction(scene.context.session_factory) as session:  # as 0002 stored it
        legacy = AccountStatement(
            content_sha256="0" * 64,
            content=content,
            size_bytes=len(content),
            uploaded_by="bank-example",
            uploaded_at=utcnow(),
        )
        session.add(legacy)
        session.flush()
        legacy_id = legacy.id
    assert process_statement(scene.context, legacy_id)
    row = statement_row(scene.context, legacy_id)
    assert row.state == "ERROR" and "migration 0003" in (row.error_reason or "")
    assert state_of(scene.context, scene.d2) == "RECONCILED"
    retried = client.http.post(f"/statements/{legacy_id}/retry")
    assert retried.status_code == 200, retried.text
    assert process_statement(scene.context, legacy_id)
    assert statement_row(scene.context, legacy_id).state == "PROCESSED"
    assert state_of(scene.context, scene.d2) == "REVERSED"


def test_header_reading_matches_the_full_parse_without_keeping_entries() -> None:
    text = VARIANTS["cr-only"](mt940(ACCOUNT_1, [("D", f"d-{i}", TEN, "n") for i in range(50)]))
    full, headers = list(iter_statements(text)), list(iter_statement_headers(text))
    assert [p.account for p in headers] == [p.account for p in full] == [ACCOUNT_1]
    assert headers[0].statement_number == full[0].statement_number
    assert len(full[0].entries) == 50 and headers[0].entries == ()
