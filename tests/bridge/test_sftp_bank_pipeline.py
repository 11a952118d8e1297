"""The whole pipeline through ISO 20022 files over SFTP against the Example Bank itself.

The bridge (its embedded runner) pays through its iso20022-sftp connector into the Example
Bank's in-process SFTP endpoint, both on PostgreSQL and both on SQLite; the bank takes the
pain.001 in, answers pain.002, pays, and drops camt.053 statements that the bridge polls and
reconciles. Each side is stepped in turn, so every hand-over is asserted: a pain.002 rejecting
one transaction (AC01), a payment returned in camt.053 with its ISO reason, a file delivered
twice, an upload cut mid-way, and a statement lost on the way (a sequence gap)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncssh
import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import example_bank.sftp as bank_sftp
from bridge_support import counters_match_rows, envelope_request, states
from example_bank.db import make_engine as make_bank_engine
from example_bank.db import make_session_factory as make_bank_sessions
from example_bank.db import migrate as migrate_bank
from example_bank.embedded import InProcessProcessor
from example_bank.file_channel import FileChannelWorker
from example_bank.models import Account, Payment, PaymentBatch, Statement
from example_bank.processing import simulated_failure
from example_bank.services import create_account, deposit
from example_bank.settings import BankSettings
from example_bank.sftp import SftpEndpoint
from g2p_bridge.core import callbacks, disbursements, envelopes, programs
from g2p_bridge.core.bank_files import poll_bank_outbox
from g2p_bridge.core.context import Context
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import (
    AccountStatement,
    BankBatch,
    BankFile,
    CallbackEvent,
    Disbursement,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import DisbursementState, StatementState
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload
from g2p_bridge.settings import BankConnectorSettings, Settings, SftpSettings

BANK = "EXAMPLE"
ACCOUNT = "PROG-0001"
RATE = 0.5
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class Bank:
    """The Example Bank as it runs embedded, stepped by the test instead of by its threads."""

    def __init__(self, settings: BankSettings) -> None:
        migrate_bank(settings.database_url)
        self.engine = make_bank_engine(settings.database_url)
        self.sessions: sessionmaker[Session] = make_bank_sessions(self.engine)
        self.settings = settings
        self.endpoint = SftpEndpoint(settings, self.sessions, run_file_channel=False)
        self.files = FileChannelWorker(settings, self.sessions)
        self.processor = InProcessProcessor(settings, self.sessions)

    def step(self) -> None:
        """Take in payment files, pay, write statements, drop them in the outbox."""
        self.files.run_once()
        assert self.processor.run_until_idle(timeout=60)
        self.files.run_once()

    def count(self, model: Any) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)

    def balance(self, number: str) -> tuple[Decimal, Decimal]:
        with self.sessions() as s:
            account = s.get(Account, number)
            assert account is not None
            return account.book_balance, account.blocked_amount


def _seed_with_one_failure(references: list[str]) -> int:
    """A seed under which some, not all, of these payments fail downstream (deterministic)."""
    for seed in range(1000):
        failing = [r for r in references if simulated_failure(seed, r, RATE)]
        if 0 < len(failing) < len(references):
            return seed
    raise AssertionError("no seed fails some but not all")


OTHER = [f"d-other-{i}" for i in range(4)]


@pytest.fixture
def bank_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """The bank's own database on the bridge's kind: PostgreSQL beside PostgreSQL, else SQLite."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'bank.db'}"
        return
    name = f"example_bank_pipeline_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def bank(tmp_path: Path, bank_database_url: str) -> Iterator[Bank]:
    client = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "bridge_key").write_bytes(client.export_private_key())
    (tmp_path / "authorized_keys").write_bytes(client.export_public_key())
    settings = BankSettings(
        database_url=bank_database_url,
        broker_url=None,
        failure_rate=RATE,
        seed=_seed_with_one_failure(OTHER),
        statement_channel="sftp",
        sftp_port=0,
        sftp_root=str(tmp_path / "sftp"),
        sftp_host_key_file=str(tmp_path / "host_key"),
        sftp_authorized_keys_file=str(tmp_path / "authorized_keys"),
    )
    bank = Bank(settings)
    with bank.sessions() as s, s.begin():
        for number, money in ((ACCOUNT, Decimal("1000.00")), ("CUST-1", None)):
            create_account(
                s,
                account_number=number,
                holder_name=f"Holder {number}",
                currency="USD",
                bank_code=BANK,
                initial_deposit=money,
            )
    bank.endpoint.start()
    yield bank
    bank.endpoint.stop()
    bank.engine.dispose()


def bridge(session_factory: Any, bank: Bank, tmp_path: Path) -> Context:
    host_key = Path(bank.settings.sftp_host_key_file + ".pub").read_text().strip()
    profile = BankConnectorSettings(
        channel="iso20022-sftp",
        bank_member_id=BANK,
        poll_interval_seconds=3600,  # polled by the test
        sftp=SftpSettings(
            host="127.0.0.1",
            port=bank.endpoint.port or 0,
            username=bank.settings.sftp_username,
            private_key_file=str(tmp_path / "bridge_key"),
            known_hosts=f"[127.0.0.1]:{bank.endpoint.port} {host_key}",
            connect_timeout_seconds=10,
            io_timeout_seconds=10,
        ),
    )
    settings = Settings(
        database_url="sqlite://",
        retry_backoff_seconds=0,
        lease_seconds=60,
        bank_connectors={BANK: profile},
    )
    return Context(settings, session_factory)


def envelope(context: Context, envelope_id: str, addresses: dict[str, str]) -> None:
    amount = Decimal("10.00")
    with transaction(context.session_factory) as session:
        if session.get(programs.BenefitProgram, "PROG1") is None:
            programs.create_program(
                session,
                ProgramPayload(
                    program_mnemonic="PROG1",
                    sponsor_bank_code=BANK,
                    sponsor_bank_account_number=ACCOUNT,
                    sponsor_bank_account_currency="USD",
                    resolver="inline",
                    id_mapper_resolution_required=False,
                ),
            )
        body = envelope_request(
            envelope_id, count=len(addresses), total=str(amount * len(addresses))
        )
        envelopes.create_envelope(
            session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
        )
        items = [
            DisbursementPayload(
                disbursement_id=reference,
                disbursement_envelope_id=envelope_id,
                mis_reference_number=f"mis-{reference}",
                beneficiary_id=f"ben-{reference}",
                beneficiary_name=f"Beneficiary {reference}",
                disbursement_amount=amount,
                narrative="December cash transfer",
                financial_address=address,
            )
            for reference, address in addresses.items()
        ]
        disbursements.create_disbursements(session, items, 100_000)


def one(context: Context, disbursement_id: str) -> Disbursement:
    with transaction(context.session_factory) as session:
        row = session.get(Disbursement, disbursement_id)
        assert row is not None
        session.expunge(row)
        return row


def run(context: Context) -> None:
    assert EmbeddedRunner(context).run_until_idle(timeout=60)


def poll(context: Context) -> None:
    assert poll_bank_outbox(context, BANK)
    run(context)


def test_pays_and_reconciles_through_files_with_the_example_bank(
    session_factory: Any, bank: Bank, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = bridge(session_factory, bank, tmp_path)
    addresses = {
        "d-own-ok": f"account:CUST-1@{BANK}.BR1",
        "d-own-none": f"account:NO-SUCH@{BANK}.BR1",  # the bank has no such account: AC01
        **{reference: f"account:ACC{i:06d}@OTHERBANK.BR1" for i, reference in enumerate(OTHER)},
    }
    returned = {r for r in OTHER if simulated_failure(bank.settings.seed, r, RATE)}
    assert returned, "the seed returns at least one payment"

    # An upload cut mid-way: the first write into the inbox drops the connection. At that
    # moment the bank's own pass must find nothing to take in (only the .part is there).
    original_write = bank_sftp._Files.write
    seen_during_cut: list[int] = []

    async def write_cut_once(self: Any, file_obj: Any, offset: int, data: bytes) -> Any:
        if not seen_during_cut:
            seen_during_cut.append(bank.files.run_once())
            seen_during_cut.append(bank.count(Payment))
            self.connection.abort()
            raise asyncssh.SFTPConnectionLost("simulated: connection cut mid-upload")
        return await original_write(self, file_obj, offset, data)

    monkeypatch.setattr(bank_sftp._Files, "write", write_cut_once)
    envelope(context, "env-1", addresses)
    run(context)  # the cut upload fails as an outage, and the retry delivers the whole file
    monkeypatch.setattr(bank_sftp._Files, "write", original_write)
    assert seen_during_cut == [0, 0]
    with transaction(context.session_factory) as session:
        (batch,) = session.scalars(select(BankBatch)).all()
        batch_id = batch.id
        assert batch.attempts >= 2, "the first upload was not cut"
    inbox = Path(bank.settings.sftp_root) / "inbox"
    assert sorted(p.name for p in inbox.iterdir()) == [f"{batch_id}.pain001.xml"]

    bank.step()
    assert bank.count(PaymentBatch) == 1 and bank.count(Payment) == 5
    poll(context)

    rejected = one(context, "d-own-none")
    assert rejected.state == DisbursementState.FAILED
    assert rejected.state_reason is not None and "AC01" in rejected.state_reason
    for reference in returned:
        reversed_one = one(context, reference)
        assert reversed_one.state == DisbursementState.REVERSED, reference
    expected = {DisbursementState.FAILED: 1, DisbursementState.REVERSED: len(returned)}
    expected[DisbursementState.RECONCILED] = 5 - len(returned)
    assert states(context.session_factory, "env-1") == expected
    paid = Decimal("10.00") * (5 - len(returned))
    assert bank.balance(ACCOUNT)[0] == Decimal("1000.00") - paid

    # The same file delivered twice: the bank answers with the same pain.002, pays nothing,
    # and the bridge recognises the report by name and content.
    received = Path(bank.settings.sftp_root + "-bank") / "received"
    (first,) = received.iterdir()
    shutil.copy(first, inbox / f"{batch_id}.pain001.xml")
    before = bank.balance(ACCOUNT)
    bank.step()
    archive = Path(bank.settings.sftp_root) / "archive"
    outbox = Path(bank.settings.sftp_root) / "outbox"
    again = (outbox / f"{batch_id}.pain002.xml").read_bytes()
    assert again == (archive / f"{batch_id}.pain002.xml").read_bytes()
    poll(context)
    with transaction(context.session_factory) as session:
        reports = session.scalars(
            select(BankFile).where(BankFile.name == f"{batch_id}.pain002.xml")
        ).all()
        assert {r.content_sha256 for r in reports} == {hashlib.sha256(again).hexdigest()}
    assert bank.count(Payment) == 5 and bank.balance(ACCOUNT) == before
    assert states(context.session_factory, "env-1") == expected

    # A statement lost on the way: the bank writes page 2 (a deposit) but it never arrives;
    # page 3 does, and the bridge reports the gap while reconciling what it has.
    with bank.sessions() as s, s.begin():
        deposit(s, ACCOUNT, Decimal("5.00"), bank_code=BANK)
    assert bank.processor.run_until_idle(timeout=60)
    with bank.sessions() as s, s.begin():
        lost = s.scalars(select(Statement).order_by(Statement.id.desc()).limit(1)).one()
        lost.delivery_state = "DELIVERED"
    with bank.sessions() as s, s.begin():
        deposit(s, ACCOUNT, Decimal("7.00"), bank_code=BANK)
    bank.step()
    assert (outbox / f"{ACCOUNT}-000003.camt053.xml").exists()
    poll(context)
    with transaction(context.session_factory) as session:
        statements = session.scalars(
            select(AccountStatement).order_by(AccountStatement.uploaded_at)
        ).all()
        assert [s.state for s in statements] == [StatementState.PROCESSED] * 2
        assert not any(s.balance_problems for s in statements)
        assert statements[0].sequence_gaps is None
        assert statements[1].sequence_gaps == f"account {ACCOUNT}: statement numbers missing: 2"
    counters_match_rows(context.session_factory)


def test_a_payment_the_bank_rejects_is_told_to_the_pbms_and_closes_the_envelope(
    session_factory: Any, bank: Bank, tmp_path: Path
) -> None:
    """A pain.002 that fails a transaction queues its result for the PBMS and, when it is the
    last outcome of the envelope, the envelope's settled summary (the bench found neither)."""
    context = bridge(session_factory, bank, tmp_path)
    envelope(
        context,
        "env-cb",
        {"d-cb-ok": f"account:CUST-1@{BANK}.BR1", "d-cb-none": f"account:NO-SUCH@{BANK}.BR1"},
    )
    with transaction(context.session_factory) as session:
        # A closed loopback port: deliveries fail and wait; what matters is what was queued.
        callbacks.set_callback_url(session, "PROG1", "http://127.0.0.1:9/cb", context.settings)
    run(context)
    bank.step()
    poll(context)
    assert one(context, "d-cb-none").state == DisbursementState.FAILED
    assert one(context, "d-cb-ok").state == DisbursementState.RECONCILED
    with transaction(context.session_factory) as session:
        events = session.scalars(
            select(CallbackEvent)
            .where(CallbackEvent.envelope_id == "env-cb")
            .order_by(CallbackEvent.sequence)
        ).all()
        by_type = {e.event_type: e for e in events}
    refused = by_type.get(callbacks.BANK_REFUSED)
    assert refused is not None and refused.result_count == 1
    assert "d-cb-none" in refused.message and "AC01" in refused.message
    assert callbacks.SETTLED in by_type
