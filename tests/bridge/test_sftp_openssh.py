"""The ISO 20022-over-SFTP channel against Debian's OpenSSH server on 127.0.0.1.

The connector alone: a payment file goes in as .part and is renamed, a resend is recognised,
an upload cut mid-way is retried cleanly, an unknown host key is refused. Then the bridge's
pipeline on PostgreSQL and on SQLite with this test playing the bank in the server's
directories: pain.002 rejecting one transaction, a whole file rejected (parked, or sent again
for a cut-off reason), statements from the outbox reconciled under the same trust rule as an
upload, and every outbox file applied once even when it is listed again."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import paramiko
import pytest
from sqlalchemy import select

from bridge_support import counters_match_rows, disbursement_items, envelope_request, states
from camt_support import Stmt, Tx, camt, debit
from formats.iso20022_schemas import assert_valid
from g2p_bridge.connectors.banks import sftp as sftp_module
from g2p_bridge.connectors.banks.base import (
    BankUnavailable,
    PaymentBatchInfo,
    PaymentInstruction,
)
from g2p_bridge.connectors.banks.iso20022_sftp import Iso20022SftpConnector
from g2p_bridge.connectors.banks.sftp import HostKeyRefused
from g2p_bridge.core import disbursements, envelopes, programs
from g2p_bridge.core.bank_files import poll_bank_outbox
from g2p_bridge.core.context import Context
from g2p_bridge.db import transaction
from g2p_bridge.embedded import EmbeddedRunner
from g2p_bridge.models import (
    AccountStatement,
    BankBatch,
    BankFile,
    Disbursement,
)
from g2p_bridge.models.base import utcnow
from g2p_bridge.models.enums import DisbursementState, StatementState, WorkState
from g2p_bridge.schemas import DisbursementPayload, EnvelopePayload, ProgramPayload
from g2p_bridge.settings import BankConnectorSettings, Settings
from sftp_support import OpenSshServer, start_openssh

BANK = "NORTH"
ACCOUNT = "2000000001"


@pytest.fixture(scope="module")
def openssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSshServer]:
    server = start_openssh(tmp_path_factory.mktemp("openssh"))
    yield server
    server.stop()


@pytest.fixture
def sshd(openssh: OpenSshServer) -> OpenSshServer:
    openssh.reset()
    return openssh


def profile(server: OpenSshServer, **overrides: Any) -> BankConnectorSettings:
    return BankConnectorSettings(
        channel="iso20022-sftp",
        sftp=server.settings(**overrides.pop("sftp", {})),
        poll_interval_seconds=3600,
        bank_member_id="NORTH01",
        **overrides,
    )


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- the connector alone ---------------------------------------------------------------------


def batch_info(batch_id: str = "batch-0001") -> PaymentBatchInfo:
    return PaymentBatchInfo(
        batch_id=batch_id,
        created_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        execution_date=datetime(2026, 12, 1, tzinfo=UTC).date(),
        debtor_name="Ministry of Social Protection",
        debtor_account=ACCOUNT,
        debtor_branch_code="BR1",
        currency="USD",
        block_reference="block-env-1",
    )


def payments(count: int) -> list[PaymentInstruction]:
    return [
        PaymentInstruction(
            payment_reference=f"d-{i:05d}",
            remitting_account=ACCOUNT,
            remitting_currency="USD",
            amount=Decimal("10.25"),
            block_reference="block-env-1",
            beneficiary_name=f"Beneficiary {i} Алемайеху",
            beneficiary_account=f"ACC{i:08d}" if i % 2 == 0 else None,
            beneficiary_account_type="BANK_ACCOUNT" if i % 2 == 0 else "MOBILE_WALLET",
            beneficiary_bank_code="OTHERBANK" if i % 2 == 0 else None,
            beneficiary_branch_code="BR0" if i % 2 == 0 else None,
            beneficiary_mobile_wallet_provider=None if i % 2 == 0 else "MPESA",
            beneficiary_phone=None if i % 2 == 0 else f"+2547{i:08d}",
            beneficiary_email=None,
            beneficiary_email_wallet_provider=None,
            narratives=("December transfer", "PROG1", "2026-12", f"ben-{i}"),
            payment_date=datetime(2026, 12, 1, tzinfo=UTC).date(),
        )
        for i in range(count)
    ]


def test_payment_file_goes_in_as_part_and_is_renamed(
    sshd: OpenSshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str, list[str]]] = []
    original = paramiko.SFTPClient.rename

    def spy(self: paramiko.SFTPClient, old: str, new: str) -> None:
        # What the bank would see at the moment of the rename: only the .part.
        renames.append((old, new, names(sshd.root / "inbox")))
        original(self, old, new)

    monkeypatch.setattr(paramiko.SFTPClient, "rename", spy)
    connector = Iso20022SftpConnector(profile(sshd))
    result = connector.initiate_batch(batch_info(), payments(5))

    assert result.accepted and result.duplicates == ()
    assert renames == [
        (
            "inbox/batch-0001.pain001.xml.part",
            "inbox/batch-0001.pain001.xml",
            ["batch-0001.pain001.xml.part"],
        )
    ]
    assert names(sshd.root / "inbox") == ["batch-0001.pain001.xml"]
    document = (sshd.root / "inbox" / "batch-0001.pain001.xml").read_bytes()
    root = assert_valid("pain.001.001.09", document)
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"}
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=ns) == "batch-0001"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=ns) == "51.25"
    assert hashlib.sha256(document).hexdigest() in (result.detail or "")


def test_a_resend_after_a_crash_is_recognised_not_delivered_again(sshd: OpenSshServer) -> None:
    connector = Iso20022SftpConnector(profile(sshd))
    first = connector.initiate_batch(batch_info(), payments(4))
    delivered = sshd.root / "inbox" / "batch-0001.pain001.xml"
    before = delivered.stat()

    again = connector.initiate_batch(batch_info(), payments(4))

    assert first.accepted and again.accepted
    assert "already delivered" in (again.detail or "")
    assert again.duplicates == tuple(p.payment_reference for p in payments(4))
    after = delivered.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert names(sshd.root / "inbox") == ["batch-0001.pain001.xml"]


def test_an_upload_cut_mid_way_is_retried_cleanly(
    sshd: OpenSshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sftp_module, "CHUNK_BYTES", 2048)
    writes = {"n": 0}
    original = paramiko.SFTPFile.write

    def cut_after_two_chunks(self: paramiko.SFTPFile, data: bytes) -> None:
        writes["n"] += 1
        if writes["n"] == 6:
            # The connection drops in the middle of the file, after what was written so far
            # went out.
            self.flush()
            self.sftp.sock.get_transport().close()
        original(self, data)

    monkeypatch.setattr(paramiko.SFTPFile, "write", cut_after_two_chunks)
    connector = Iso20022SftpConnector(profile(sshd))
    with pytest.raises(BankUnavailable):
        connector.initiate_batch(batch_info(), payments(60))
    inbox = sshd.root / "inbox"
    assert names(inbox) == ["batch-0001.pain001.xml.part"]  # never the final name
    part = inbox / "batch-0001.pain001.xml.part"
    deadline = time.monotonic() + 10
    while part.stat().st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # sshd may still be writing what arrived before the cut
    partial_size = part.stat().st_size
    assert partial_size > 0

    monkeypatch.setattr(paramiko.SFTPFile, "write", original)
    result = connector.initiate_batch(batch_info(), payments(60))

    assert result.accepted and result.duplicates == ()
    assert names(inbox) == ["batch-0001.pain001.xml"]
    document = (inbox / "batch-0001.pain001.xml").read_bytes()
    assert len(document) > partial_size
    assert_valid("pain.001.001.09", document)
    assert document.count(b"<CdtTrfTxInf>") == 60


def test_an_unknown_host_key_is_refused(sshd: OpenSshServer) -> None:
    # A real key, but the client's, not the server's: as a changed host key would look.
    stranger = (sshd.client_key.with_suffix(".pub")).read_text().split()
    wrong_line = f"[127.0.0.1]:{sshd.port} {stranger[0]} {stranger[1]}"
    for known in (wrong_line, "", f"[127.0.0.1]:{sshd.port + 1} {stranger[0]} {stranger[1]}"):
        connector = Iso20022SftpConnector(profile(sshd, sftp={"known_hosts": known}))
        with pytest.raises(HostKeyRefused, match="refusing to connect"):
            connector.initiate_batch(batch_info(), payments(2))
    assert names(sshd.root / "inbox") == []


def test_a_key_the_server_does_not_authorize_cannot_log_in(
    sshd: OpenSshServer, tmp_path: Path
) -> None:
    paramiko.ECDSAKey.generate().write_private_key_file(str(tmp_path / "stranger"))
    connector = Iso20022SftpConnector(
        profile(sshd, sftp={"private_key_file": str(tmp_path / "stranger")})
    )
    with pytest.raises(BankUnavailable, match="login"):
        connector.initiate_batch(batch_info(), payments(2))
    assert names(sshd.root / "inbox") == []


def test_the_profile_picks_pain001_001_03(sshd: OpenSshServer) -> None:
    connector = Iso20022SftpConnector(profile(sshd, pain001_version="pain.001.001.03"))
    assert connector.initiate_batch(batch_info(), payments(3)).accepted
    document = (sshd.root / "inbox" / "batch-0001.pain001.xml").read_bytes()
    root = assert_valid("pain.001.001.03", document)
    ns = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}
    # .03 carries the funds block reference on every transaction.
    assert len(root.findall(".//p:CdtTrfTxInf/p:InstrForDbtrAgt", namespaces=ns)) == 3


def test_a_server_that_never_answers_times_out(sshd: OpenSshServer) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        connector = Iso20022SftpConnector(
            profile(
                sshd,
                sftp={
                    "port": port,
                    "known_hosts": sshd.host_key_line.replace(str(sshd.port), str(port)),
                    "connect_timeout_seconds": 1,
                },
            )
        )
        started = time.monotonic()
        with pytest.raises(BankUnavailable, match="handshake"):
            connector.initiate_batch(batch_info(), payments(1))
        assert time.monotonic() - started < 10


# -- the pipeline through the channel -------------------------------------------------------


def sftp_context(session_factory: Any, server: OpenSshServer, **settings: Any) -> Context:
    values: dict[str, Any] = {
        "database_url": "sqlite://",
        "retry_backoff_seconds": 0,
        "lease_seconds": 60,
        "dispatch_batch_size": 50,
        "bank_connectors": {BANK: profile(server)},
    }
    values.update(settings)
    return Context(Settings(**values), session_factory)


def setup_envelope(context: Context, count: int = 3, envelope_id: str = "env-1") -> list[str]:
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
        body = envelope_request(envelope_id, count=count, total=str(Decimal("10.00") * count))
        envelopes.create_envelope(
            session, EnvelopePayload(**body["message"]), "pbms-1", utcnow().date()
        )
        items = [
            DisbursementPayload(**i) for i in disbursement_items(envelope_id, count, amount="10.00")
        ]
        stored = disbursements.create_disbursements(session, items, 100_000)
    return [d.disbursement_id or "" for d in stored]


def pain002(
    batch_id: str,
    group: str,
    transactions: tuple[tuple[str, str, str | None], ...] = (),
    group_reason: str | None = None,
    block: tuple[str, str] | None = None,
) -> bytes:
    """A pain.002.001.03 as a bank writes it, checked against the official XSD."""
    reason = f"<StsRsnInf><Rsn><Cd>{group_reason}</Cd></Rsn></StsRsnInf>" if group_reason else ""
    txs = "".join(
        f"<TxInfAndSts><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>{status}</TxSts>"
        + (f"<StsRsnInf><Rsn><Cd>{code}</Cd></Rsn></StsRsnInf>" if code else "")
        + "</TxInfAndSts>"
        for e2e, status, code in transactions
    )
    block_status = (
        f"<PmtInfSts>{block[0]}</PmtInfSts><StsRsnInf><Rsn><Cd>{block[1]}</Cd></Rsn></StsRsnInf>"
        if block
        else ""
    )
    payment_information = (
        f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>{batch_id}</OrgnlPmtInfId>{block_status}{txs}"
        "</OrgnlPmtInfAndSts>"
        if txs or block
        else ""
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>'
        f"<GrpHdr><MsgId>PSR-{batch_id[:20]}</MsgId><CreDtTm>2026-12-01T10:00:00Z</CreDtTm>"
        "</GrpHdr>"
        f"<OrgnlGrpInfAndSts><OrgnlMsgId>{batch_id}</OrgnlMsgId>"
        f"<OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId><GrpSts>{group}</GrpSts>{reason}"
        f"</OrgnlGrpInfAndSts>{payment_information}</CstmrPmtStsRpt></Document>"
    ).encode()
    assert_valid("pain.002.001.03", document)
    return document


def only_batch(context: Context) -> BankBatch:
    with transaction(context.session_factory) as session:
        (batch,) = session.scalars(select(BankBatch)).all()
        session.expunge(batch)
        return batch


def disbursement(context: Context, disbursement_id: str) -> Disbursement:
    with transaction(context.session_factory) as session:
        row = session.get(Disbursement, disbursement_id)
        assert row is not None
        session.expunge(row)
        return row


def bank_files(context: Context) -> list[tuple[str, str]]:
    with transaction(context.session_factory) as session:
        return [
            (f.name, f.outcome) for f in session.scalars(select(BankFile).order_by(BankFile.id))
        ]


def delivered(context: Context, server: OpenSshServer) -> tuple[BankBatch, Path]:
    runner = EmbeddedRunner(context)
    assert runner.run_until_idle(timeout=60)
    batch = only_batch(context)
    assert batch.state == WorkState.DONE, batch.last_error
    path = server.root / "inbox" / f"{batch.id}.pain001.xml"
    assert path.exists(), names(server.root / "inbox")
    return batch, path


def test_pays_through_files_and_a_rejected_transaction_fails_with_its_iso_reason(
    session_factory: Any, sshd: OpenSshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = sftp_context(session_factory, sshd)
    ids = setup_envelope(context, count=3)
    batch, path = delivered(context, sshd)
    root = assert_valid("pain.001.001.09", path.read_bytes())
    assert sorted(root.itertext()).count(ids[0]) == 1
    assert states(context.session_factory, "env-1") == {DisbursementState.SHIPPED: 3}

    # The bank answers: the third payment rejected (closed account), the others booked.
    outbox = sshd.root / "outbox"
    report = pain002(
        batch.id, "PART", ((ids[0], "ACCP", None), (ids[1], "ACCP", None), (ids[2], "RJCT", "AC04"))
    )
    (outbox / f"{batch.id}.pain002.xml").write_bytes(report)
    statement = camt(
        "camt.053.001.08",
        Stmt(ACCOUNT, (debit(Tx(ids[0], Decimal("10.00")), Tx(ids[1], Decimal("10.00"))),)),
    )
    (outbox / "stmt-0001.camt053.xml").write_bytes(statement)
    (outbox / "unrelated.txt").write_text("not ours")

    # The first poll dies after applying the report but before its archive move.
    original_move = sftp_module.SftpSession.move
    calls = {"n": 0}

    def move_fails_once(self: Any, *args: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BankUnavailable("simulated: connection dropped before the archive move")
        return original_move(self, *args)

    monkeypatch.setattr(sftp_module.SftpSession, "move", move_fails_once)
    assert poll_bank_outbox(context, BANK)
    assert len(bank_files(context)) == 1
    assert poll_bank_outbox(context, BANK)  # lists the same report again: applied once
    assert EmbeddedRunner(context).run_until_idle(timeout=60)

    assert sorted(bank_files(context)) == [
        (f"{batch.id}.pain002.xml", "applied"),
        ("stmt-0001.camt053.xml", "applied"),
    ]
    assert names(outbox) == ["unrelated.txt"]  # not ours: left where it is
    assert names(sshd.root / "archive") == sorted(
        [f"{batch.id}.pain002.xml", "stmt-0001.camt053.xml"]
    )
    rejected = disbursement(context, ids[2])
    assert rejected.state == DisbursementState.FAILED
    assert rejected.state_reason == "rejected by the bank: AC04 closed account number"
    assert states(context.session_factory, "env-1") == {
        DisbursementState.RECONCILED: 2,
        DisbursementState.FAILED: 1,
    }
    with transaction(context.session_factory) as session:
        (stored,) = session.scalars(select(AccountStatement)).all()
        assert stored.state == StatementState.PROCESSED
        assert stored.uploaded_by == f"sftp:{BANK}"
    counters_match_rows(context.session_factory)

    # The bank drops the very same report again: recognised by name and hash, archived only.
    (outbox / f"{batch.id}.pain002.xml").write_bytes(report)
    assert poll_bank_outbox(context, BANK)
    assert len(bank_files(context)) == 2
    assert names(outbox) == ["unrelated.txt"]
    assert states(context.session_factory, "env-1")[DisbursementState.FAILED] == 1
    counters_match_rows(context.session_factory)


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it in the worker runs, no handler catches it."""


def test_a_worker_killed_after_its_upload_resends_and_the_bank_gets_one_file(
    session_factory: Any, sshd: OpenSshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = sftp_context(session_factory, sshd, lease_seconds=1, step_time_limit_seconds=30)
    setup_envelope(context, count=3)
    original = Iso20022SftpConnector.initiate_batch

    def upload_then_die(self: Any, *args: Any) -> Any:
        original(self, *args)
        raise WorkerKilled  # the file is in the inbox; our record of it never commits

    monkeypatch.setattr(Iso20022SftpConnector, "initiate_batch", upload_then_die)
    runner = EmbeddedRunner(context)
    with pytest.raises(WorkerKilled):
        runner.run_until_idle(timeout=60)
    batch = only_batch(context)
    assert batch.state == WorkState.RUNNING
    path = sshd.root / "inbox" / f"{batch.id}.pain001.xml"
    first = path.stat()
    monkeypatch.setattr(Iso20022SftpConnector, "initiate_batch", original)

    deadline = time.monotonic() + 60
    while only_batch(context).state != WorkState.DONE and time.monotonic() < deadline:
        runner.run_once()  # the lease runs out, the sweep wakes the batch, it is sent again
        time.sleep(0.1)

    resent = only_batch(context)
    assert resent.state == WorkState.DONE
    assert "already delivered" in (resent.bank_response or "")
    assert names(sshd.root / "inbox") == [path.name]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert states(context.session_factory, "env-1") == {DisbursementState.SHIPPED: 3}
    counters_match_rows(context.session_factory)


def test_statements_from_the_outbox_obey_the_upload_trust_rule(
    session_factory: Any, sshd: OpenSshServer
) -> None:
    context = sftp_context(
        session_factory,
        sshd,
        bank_connectors={BANK: profile(sshd, sftp={"max_file_bytes": 4000})},
    )
    setup_envelope(context, count=1)
    outbox = sshd.root / "outbox"
    foreign = camt("camt.053.001.08", Stmt("9999999999", (debit(Tx("x-1", Decimal("5.00"))),)))
    (outbox / "foreign.camt053.xml").write_bytes(foreign)
    (outbox / "broken.camt054.xml").write_bytes(b"<Document><oops")
    (outbox / "huge.camt053.xml").write_bytes(b"<" + b"x" * 5000)
    (outbox / "..hidden.pain002.xml").write_bytes(b"<x/>")
    (outbox / "a name.pain002.xml").write_bytes(b"<x/>")

    # The producer gives the bank its poll row and wakes it; the embedded worker polls.
    assert EmbeddedRunner(context).run_until_idle(timeout=60)

    with transaction(context.session_factory) as session:
        assert session.scalars(select(AccountStatement)).all() == []
        recorded = {f.name: f for f in session.scalars(select(BankFile))}
    assert {n: f.outcome for n, f in recorded.items()} == {
        "foreign.camt053.xml": "refused",
        "broken.camt054.xml": "refused",
        "huge.camt053.xml": "refused",
    }
    assert "9999999999" in (recorded["foreign.camt053.xml"].detail or "")
    assert recorded["huge.camt053.xml"].detail == "larger than the 4000-byte limit"
    # Names outside the safe set are not ours to touch: left where they are.
    assert names(outbox) == ["..hidden.pain002.xml", "a name.pain002.xml"]


def test_a_rejected_file_parks_its_batch_with_the_reason(
    session_factory: Any, sshd: OpenSshServer
) -> None:
    context = sftp_context(session_factory, sshd)
    ids = setup_envelope(context, count=2)
    batch, _ = delivered(context, sshd)
    (sshd.root / "outbox" / "r.pain002.xml").write_bytes(
        pain002(batch.id, "RJCT", group_reason="FF01")
    )

    assert poll_bank_outbox(context, BANK)

    parked = only_batch(context)
    assert parked.state == WorkState.FAILED
    assert parked.last_error == "file rejected by the bank: FF01 invalid file format"
    for disbursement_id in ids:
        row = disbursement(context, disbursement_id)
        assert row.state == DisbursementState.FAILED
        assert row.state_reason == "payment file rejected by the bank: FF01 invalid file format"
    counters_match_rows(context.session_factory)


def test_a_payment_block_the_bank_cannot_cover_parks_the_batch(
    session_factory: Any, sshd: OpenSshServer
) -> None:
    # Funds pre-arranged: the bank's own refusal (AM04 on the payment information block, the
    # group only "partly" accepted) is what stops the payroll.
    context = sftp_context(session_factory, sshd)
    ids = setup_envelope(context, count=2)
    batch, _ = delivered(context, sshd)
    (sshd.root / "outbox" / "r.pain002.xml").write_bytes(
        pain002(batch.id, "PART", block=("RJCT", "AM04"))
    )

    assert poll_bank_outbox(context, BANK)

    assert only_batch(context).state == WorkState.FAILED
    assert {disbursement(context, i).state_reason for i in ids} == {
        "payment file rejected by the bank: AM04 insufficient funds"
    }
    counters_match_rows(context.session_factory)


def test_a_file_rejected_for_a_cut_off_is_sent_again_as_the_same_file(
    session_factory: Any, sshd: OpenSshServer
) -> None:
    context = sftp_context(session_factory, sshd)
    ids = setup_envelope(context, count=2)
    batch, path = delivered(context, sshd)
    first = path.read_bytes()
    path.unlink()  # the bank picked it up
    (sshd.root / "outbox" / "r.pain002.xml").write_bytes(
        pain002(batch.id, "RJCT", group_reason="TM01")
    )

    assert poll_bank_outbox(context, BANK)
    resent = only_batch(context)
    assert resent.state == WorkState.RUNNING  # held until its backoff ends, then sent again
    assert resent.last_error == "file rejected by the bank: TM01 invalid cut-off time"
    assert states(context.session_factory, "env-1") == {DisbursementState.DISPATCHING: 2}
    counters_match_rows(context.session_factory)

    assert EmbeddedRunner(context).run_until_idle(timeout=60)

    assert only_batch(context).state == WorkState.DONE
    assert path.read_bytes() == first  # the same file, so the bank sees the same MsgId
    assert {disbursement(context, i).state for i in ids} == {DisbursementState.SHIPPED}
    counters_match_rows(context.session_factory)


def test_a_duplicate_message_rejection_leaves_the_first_delivery_standing(
    session_factory: Any, sshd: OpenSshServer
) -> None:
    context = sftp_context(session_factory, sshd)
    setup_envelope(context, count=2)
    batch, _ = delivered(context, sshd)
    (sshd.root / "outbox" / "dup.pain002.xml").write_bytes(
        pain002(batch.id, "RJCT", group_reason="DU01")
    )
    assert poll_bank_outbox(context, BANK)
    assert only_batch(context).state == WorkState.DONE
    assert states(context.session_factory, "env-1") == {DisbursementState.SHIPPED: 2}


def test_a_report_on_another_banks_batch_is_refused(
    session_factory: Any, sshd: OpenSshServer
) -> None:
    context = sftp_context(session_factory, sshd)
    setup_envelope(context, count=1)
    (sshd.root / "outbox" / "x.pain002.xml").write_bytes(pain002("no-such-batch", "RJCT"))
    assert EmbeddedRunner(context).run_until_idle(timeout=60)
    assert bank_files(context) == [("x.pain002.xml", "refused")]
