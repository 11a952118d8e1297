"""The Example Bank over SFTP: pain.001 in, pain.002 and camt.053 out, through a real SSH client.

Every test drives the in-process server with an asyncssh client on 127.0.0.1 that pins the
bank's host key, the way the bridge's connector does, and steps the file channel explicitly
(``run_once``) so each step's outcome is asserted, not waited for.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conftest import Bank
from example_bank.file_channel import FileChannelWorker
from example_bank.models import Payment, PaymentBatch, PaymentFile, Statement
from example_bank.processing import write_due_statements
from example_bank.settings import BankSettings
from example_bank.sftp import SftpEndpoint
from example_bank.statement_files import ISO_RETURN_REASONS
from g2p_bridge.formats.iso20022 import (
    CreditTransfer,
    FinancialInstitution,
    GroupStatus,
    OtherAccount,
    TransactionStatus,
    iter_camt,
    iter_status_report,
    sequence_gaps,
    to_recon_statement,
    write_pain001,
)
from g2p_bridge.formats.iso20022 import (
    PaymentBatch as Pain001Batch,
)

T = TypeVar("T")
OTHER_BANK = FinancialInstitution(member_id="OTHERBANK")
THIS_BANK = FinancialInstitution(member_id="EXAMPLE")


class Client:
    """An SFTP client session per call, as the bridge's connector opens them."""

    def __init__(self, port: int, host_key: Path, client_key: Path, username: str) -> None:
        self.port = port
        self.known_hosts = asyncssh.import_known_hosts(
            f"[127.0.0.1]:{port} " + (host_key.with_suffix(".pub")).read_text()
        )
        self.client_key = client_key
        self.username = username

    def run(self, work: Callable[[asyncssh.SFTPClient], Awaitable[T]], **options: Any) -> T:
        async def session() -> T:
            connect: dict[str, Any] = {
                "known_hosts": self.known_hosts,
                "client_keys": [str(self.client_key)],
                "username": self.username,
                "connect_timeout": 10,
            }
            connect.update(options)
            async with (
                asyncssh.connect("127.0.0.1", self.port, **connect) as conn,
                conn.start_sftp_client() as sftp,
            ):
                return await work(sftp)

        return asyncio.run(asyncio.wait_for(session(), 30))

    def upload(self, batch_id: str, data: bytes) -> None:
        async def work(sftp: asyncssh.SFTPClient) -> None:
            part = f"inbox/{batch_id}.pain001.xml.part"
            async with sftp.open(part, "wb") as out:
                await out.write(data)
            await sftp.posix_rename(part, f"inbox/{batch_id}.pain001.xml")

        self.run(work)

    def upload_cut(self, batch_id: str, data: bytes) -> None:
        """Write part of the file, then drop the connection without closing the file."""

        async def work(sftp: asyncssh.SFTPClient) -> None:
            out = await sftp.open(f"inbox/{batch_id}.pain001.xml.part", "wb")
            await out.write(data[: len(data) // 2])
            raise ConnectionAbortedError("cut")

        with pytest.raises(ConnectionAbortedError):
            self.run(work)

    def listing(self, directory: str) -> list[str]:
        async def work(sftp: asyncssh.SFTPClient) -> list[str]:
            return sorted(await sftp.listdir(directory))

        return [name for name in self.run(work) if name not in (".", "..")]

    def fetch(self, path: str) -> bytes:
        async def work(sftp: asyncssh.SFTPClient) -> bytes:
            async with sftp.open(path, "rb") as source:
                data = await source.read()
            return data if isinstance(data, bytes) else data.encode()

        return self.run(work)

    def archive(self, name: str) -> None:
        async def work(sftp: asyncssh.SFTPClient) -> None:
            await sftp.posix_rename(f"outbox/{name}", f"archive/{name}")

        self.run(work)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_path = tmp_path / "bridge_key"
    client.write_private_key(str(client_path))
    authorized = tmp_path / "authorized_keys"
    authorized.write_bytes(client.export_public_key())
    return client_path, authorized


@pytest.fixture
def sftp_settings(settings: BankSettings, tmp_path: Path, keys: tuple[Path, Path]) -> BankSettings:
    return settings.model_copy(
        update={
            "failure_rate": 0.0,
            "statement_channel": "sftp",
            "sftp_port": 0,
            "sftp_root": str(tmp_path / "sftp"),
            "sftp_host_key_file": str(tmp_path / "host_key"),
            "sftp_authorized_keys_file": str(keys[1]),
        }
    )


@pytest.fixture
def endpoint(
    sftp_settings: BankSettings, sessions: sessionmaker[Session]
) -> Iterator[SftpEndpoint]:
    # The file channel is stepped by the tests (run_once), not by its thread.
    with SftpEndpoint(sftp_settings, sessions, run_file_channel=False) as running:
        yield running


@pytest.fixture
def channel(sftp_settings: BankSettings, sessions: sessionmaker[Session]) -> FileChannelWorker:
    return FileChannelWorker(sftp_settings, sessions)


@pytest.fixture
def client(endpoint: SftpEndpoint, sftp_settings: BankSettings, keys: tuple[Path, Path]) -> Client:
    assert endpoint.port
    return Client(
        endpoint.port,
        Path(sftp_settings.sftp_host_key_file),
        keys[0],
        sftp_settings.sftp_username,
    )


def pain001(batch_id: str, block: str, transfers: list[CreditTransfer]) -> bytes:
    out = io.BytesIO()
    total = sum((t.amount for t in transfers), Decimal(0))
    write_pain001(
        out,
        Pain001Batch(
            message_id=batch_id,
            created_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
            initiating_party="Ministry",
            debtor_name="Ministry programme",
            debtor_account=OtherAccount("PROG-1"),
            debtor_agent=THIS_BANK,
            requested_execution_date=date(2026, 12, 1),
            currency="USD",
            number_of_transactions=len(transfers),
            control_sum=total,
            funds_block_reference=block,
        ),
        transfers,
    )
    return out.getvalue()


def transfer(ref: str, amount: str, account: str = "9000001", agent: Any = OTHER_BANK) -> Any:
    return CreditTransfer(ref, Decimal(amount), "USD", f"Beneficiary {ref}", OtherAccount(account),
                          agent, "December transfer")  # fmt: skip


def report(client: Client, batch_id: str) -> tuple[GroupStatus, dict[str, TransactionStatus]]:
    items = list(iter_status_report(io.BytesIO(client.fetch(f"outbox/{batch_id}.pain002.xml"))))
    group = items[0]
    assert isinstance(group, GroupStatus)
    return group, {
        i.original_end_to_end_id or "": i for i in items if isinstance(i, TransactionStatus)
    }


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def funded(bank: Bank) -> str:
    bank.account("PROG-1", "1000.00")
    bank.account("CUST-1", None)
    return bank.block("PROG-1", "100.00")


def test_a_payment_file_is_paid_and_answered_transaction_by_transaction(
    client: Client, channel: FileChannelWorker, bank: Bank, funded: str
) -> None:
    data = pain001(
        "batch-1",
        funded,
        [
            transfer("d-1", "30.00"),
            transfer("d-2", "20.00", "CUST-1", THIS_BANK),
            transfer("d-3", "10.00", "NO-SUCH-ACCOUNT", THIS_BANK),
            transfer("d-4", "60.00"),  # more than the block has left after d-1 and d-2
            transfer("d-5", "50.00"),  # exactly what is left
        ],
    )
    client.upload("batch-1", data)
    assert channel.run_once() == 1
    group, statuses = report(client, "batch-1")
    assert (group.status, group.original_message_id) == ("PART", "batch-1")
    assert {ref: s.status for ref, s in statuses.items()} == {
        "d-1": "ACCP", "d-2": "ACCP", "d-3": "RJCT", "d-4": "RJCT", "d-5": "ACCP",
    }  # fmt: skip
    assert statuses["d-3"].reasons[0].code == "AC01"
    assert statuses["d-4"].reasons[0].code == "AM04"
    assert client.listing("inbox") == []  # taken in: out of the bridge's inbox

    bank.process_all()
    assert bank.balances("PROG-1") == (Decimal("900.00"), Decimal("0.00"))
    assert bank.balances("CUST-1") == (Decimal("20.00"), Decimal("0.00"))
    with bank.sessions() as s, s.begin():
        write_due_statements(s, bank.settings)
    channel.run_once()
    (name,) = [n for n in client.listing("outbox") if n.endswith(".camt053.xml")]
    assert name == "PROG-1-000001.camt053.xml"
    (statement,) = iter_camt(io.BytesIO(client.fetch(f"outbox/{name}")))
    assert statement.electronic_sequence_number == 1
    recon = to_recon_statement(statement)
    assert recon.balance_problem() is None
    debits = {e.customer_reference: e.amount for e in recon.entries if e.mark == "D"}
    assert debits == {"d-1": Decimal("30.00"), "d-2": Decimal("20.00"), "d-5": Decimal("50.00")}
    bank.assert_invariants()


def test_a_returned_payment_comes_back_in_camt053_with_its_iso_reason(
    client: Client, channel: FileChannelWorker, bank: Bank, funded: str
) -> None:
    bank.settings = bank.settings.model_copy(update={"failure_rate": 1.0})
    client.upload("batch-r", pain001("batch-r", funded, [transfer("d-r", "25.00")]))
    channel.run_once()
    assert report(client, "batch-r")[0].status == "ACCP"
    bank.process_all()
    with bank.sessions() as s, s.begin():
        write_due_statements(s, bank.settings)
    channel.run_once()
    (statement,) = iter_camt(io.BytesIO(client.fetch("outbox/PROG-1-000001.camt053.xml")))
    recon = to_recon_statement(statement)
    assert recon.balance_problem() is None
    (paid,) = [e for e in recon.entries if e.mark == "D"]
    (back,) = [e for e in recon.entries if e.mark == "RD"]
    assert paid.customer_reference == back.customer_reference == "d-r"
    assert back.return_reason_code in ISO_RETURN_REASONS.values()
    assert back.reversal_reason is not None and back.reversal_reason.startswith(
        back.return_reason_code
    )
    # The money is back; the block stays used (as on the JSON channel).
    assert bank.balances("PROG-1") == (Decimal("1000.00"), Decimal("75.00"))


def test_a_file_delivered_twice_is_paid_once_and_answered_the_same(
    client: Client,
    channel: FileChannelWorker,
    bank: Bank,
    funded: str,
    sessions: sessionmaker[Session],
) -> None:
    data = pain001("batch-2", funded, [transfer("d-1", "30.00"), transfer("d-2", "20.00")])
    client.upload("batch-2", data)
    channel.run_once()
    first = client.fetch("outbox/batch-2.pain002.xml")
    client.archive("batch-2.pain002.xml")
    # Again as it was, and again with other content under the same batch id: neither is paid.
    client.upload("batch-2", data)
    channel.run_once()
    assert client.fetch("outbox/batch-2.pain002.xml") == first
    client.archive("batch-2.pain002.xml")
    client.upload("batch-2", pain001("batch-2", funded, [transfer("d-9", "40.00")]))
    channel.run_once()
    assert client.fetch("outbox/batch-2.pain002.xml") == first
    assert count(sessions, PaymentBatch) == 1
    assert count(sessions, Payment) == 2
    # A new file repeating an already received end-to-end id: accepted, not paid again.
    client.upload("batch-3", pain001("batch-3", funded, [transfer("d-1", "30.00")]))
    channel.run_once()
    group, statuses = report(client, "batch-3")
    assert group.status == "ACCP" and statuses["d-1"].status == "ACCP"
    assert "paid once" in str(statuses["d-1"].reasons[0])
    assert count(sessions, Payment) == 2
    bank.process_all()
    assert bank.balances("PROG-1") == (Decimal("950.00"), Decimal("50.00"))


def test_an_upload_cut_mid_way_is_never_picked_up(
    client: Client, channel: FileChannelWorker, funded: str, sessions: sessionmaker[Session]
) -> None:
    data = pain001("batch-4", funded, [transfer("d-1", "30.00"), transfer("d-2", "20.00")])
    client.upload_cut("batch-4", data)
    assert client.listing("inbox") == ["batch-4.pain001.xml.part"]
    assert channel.run_once() == 0
    assert client.listing("outbox") == []
    # The retry writes the whole file again and renames it: now it is taken in.
    client.upload("batch-4", data)
    assert channel.run_once() == 1
    assert report(client, "batch-4")[0].status == "ACCP"
    assert count(sessions, Payment) == 2


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda data: data[: len(data) // 2], "FF01"),  # renamed complete while it was not
        (lambda data: data.replace(b"<CtrlSum>50.00<", b"<CtrlSum>50.01<", 1), "AM10"),
        (lambda data: data.replace(b"<MsgId>batch-5<", b"<MsgId>batch-6<", 1), "FF01"),
        (lambda data: b"<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + data, "FF01"),
    ],
)
def test_a_broken_file_is_refused_whole_and_nothing_is_paid(
    client: Client,
    channel: FileChannelWorker,
    funded: str,
    sessions: sessionmaker[Session],
    mangle: Callable[[bytes], bytes],
    code: str,
) -> None:
    data = pain001("batch-5", funded, [transfer("d-1", "30.00"), transfer("d-2", "20.00")])
    client.upload("batch-5", mangle(data))
    channel.run_once()
    group, statuses = report(client, "batch-5")
    assert group.status == "RJCT" and statuses == {}
    assert group.reasons[0].code == code
    assert count(sessions, Payment) == 0
    with sessions() as s:
        stored = s.get(PaymentFile, "batch-5")
        assert stored is not None and stored.batch_id is None and stored.group_status == "RJCT"


def test_statements_number_electronically_per_account_and_a_gap_shows(
    client: Client, channel: FileChannelWorker, bank: Bank, funded: str
) -> None:
    for number in range(1, 4):
        batch_id = f"batch-s{number}"
        client.upload(batch_id, pain001(batch_id, funded, [transfer(f"d-s{number}", "5.00")]))
        channel.run_once()
        bank.process_all()
        with bank.sessions() as s, s.begin():
            write_due_statements(s, bank.settings)
        channel.run_once()
    names = [n for n in client.listing("outbox") if n.endswith(".camt053.xml")]
    assert names == [f"PROG-1-00000{n}.camt053.xml" for n in (1, 2, 3)]
    statements = [
        s for name in names for s in iter_camt(io.BytesIO(client.fetch(f"outbox/{name}")))
    ]
    assert [s.electronic_sequence_number for s in statements] == [1, 2, 3]
    assert sequence_gaps(statements) == []
    # Each opens where the previous one closed.
    for earlier, later in itertools.pairwise(statements):
        assert earlier.closing_balance is not None and later.opening_balance is not None
        assert earlier.closing_balance.signed_amount == later.opening_balance.signed_amount
    # The middle one lost on the way: the bridge's reader reports the gap.
    assert sequence_gaps([statements[0], statements[2]]) == [
        "account PROG-1: electronic sequence numbers missing: 2"
    ]


def test_mt940_is_dropped_too_when_configured(
    sftp_settings: BankSettings,
    sessions: sessionmaker[Session],
    client: Client,
    bank: Bank,
    funded: str,
) -> None:
    both = sftp_settings.model_copy(update={"sftp_statement_formats": ["camt053", "mt940"]})
    channel = FileChannelWorker(both, sessions)
    client.upload("batch-m", pain001("batch-m", funded, [transfer("d-m", "5.00")]))
    channel.run_once()
    bank.process_all()
    with bank.sessions() as s, s.begin():
        write_due_statements(s, bank.settings)
    channel.run_once()
    outbox = client.listing("outbox")
    assert "PROG-1-000001.camt053.xml" in outbox and "PROG-1-000001.sta" in outbox
    with sessions() as s:
        mt940 = s.scalars(select(Statement.mt940)).one()
    assert client.fetch("outbox/PROG-1-000001.sta").decode() == mt940


def test_the_file_channel_thread_answers_without_being_stepped(
    sftp_settings: BankSettings,
    sessions: sessionmaker[Session],
    keys: tuple[Path, Path],
    funded: str,
) -> None:
    with SftpEndpoint(sftp_settings.model_copy(update={"sftp_poll_seconds": 0.05}), sessions) as ep:
        assert ep.port
        client = Client(ep.port, Path(sftp_settings.sftp_host_key_file), keys[0], "g2p-bridge")
        client.upload("batch-t", pain001("batch-t", funded, [transfer("d-t", "5.00")]))
        deadline = time.monotonic() + 20
        while "batch-t.pain002.xml" not in client.listing("outbox"):
            assert time.monotonic() < deadline, "no answer within 20 s"
            time.sleep(0.05)
    assert count(sessions, Payment) == 1


# -- who may connect, and what a session may do -------------------------------------------------


def test_only_the_configured_key_and_user_get_in(
    client: Client, tmp_path: Path, endpoint: SftpEndpoint
) -> None:
    stranger = tmp_path / "stranger_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    with pytest.raises(asyncssh.PermissionDenied):
        client.run(lambda sftp: sftp.listdir("."), client_keys=[str(stranger)])
    with pytest.raises(asyncssh.PermissionDenied):
        client.run(lambda sftp: sftp.listdir("."), username="root")
    with pytest.raises(asyncssh.PermissionDenied):
        client.run(lambda sftp: sftp.listdir("."), client_keys=None, password="guess")
    # A client pinning another host key refuses the bank.
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        client.run(
            lambda sftp: sftp.listdir("."),
            known_hosts=asyncssh.import_known_hosts(f"[127.0.0.1]:{endpoint.port} {other}"),
        )


def test_the_session_is_held_inside_the_root_without_links(
    client: Client, sftp_settings: BankSettings, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("bank private")
    assert sorted(client.listing(".")) == ["archive", "inbox", "outbox"]
    assert client.listing("../..") == ["archive", "inbox", "outbox"]
    with pytest.raises(asyncssh.SFTPError):
        client.fetch("../secret.txt")
    with pytest.raises(asyncssh.SFTPError):
        client.run(lambda sftp: sftp.symlink(str(secret), "inbox/x.pain001.xml"))
    with pytest.raises(asyncssh.SFTPError):
        client.run(lambda sftp: sftp.link("outbox", "inbox/y.pain001.xml"))
    assert client.listing("inbox") == []


def test_a_wrongly_named_inbox_file_is_set_aside(
    client: Client, channel: FileChannelWorker, sessions: sessionmaker[Session]
) -> None:
    async def work(sftp: asyncssh.SFTPClient) -> None:
        async with sftp.open("inbox/../inbox/notes.txt", "wb") as out:
            await out.write(b"hello")

    client.run(work)
    assert channel.run_once() == 1
    assert client.listing("inbox") == [] and client.listing("outbox") == []
    assert list(channel.directories.unreadable.iterdir())
    assert count(sessions, PaymentFile) == 0


def test_prearranged_funds_are_blocked_from_the_available_balance_when_the_file_comes_in(
    client: Client, channel: FileChannelWorker, bank: Bank, sessions: sessionmaker[Session]
) -> None:
    # The bridge's funds=prearranged profile names its own key, which this bank never issued.
    bank.account("PROG-1", "100.00")
    bank.block("PROG-1", "30.00")  # earmarked for something else: not available to the file
    transfers = [transfer("p-1", "40.00"), transfer("p-2", "40.00"), transfer("p-3", "30.00")]
    client.upload("batch-p", pain001("batch-p", "block-env-1", transfers))
    channel.run_once()
    group, statuses = report(client, "batch-p")
    assert group.status == "PART"
    assert [statuses[r].status for r in ("p-1", "p-2", "p-3")] == ["ACCP", "RJCT", "ACCP"]
    assert statuses["p-2"].reasons[0].code == "AM04"
    assert bank.balances("PROG-1") == (Decimal("100.00"), Decimal("100.00"))
    bank.process_all()
    assert bank.balances("PROG-1") == (Decimal("30.00"), Decimal("30.00"))
    # The same file again changes nothing, the block included.
    client.upload("batch-p", pain001("batch-p", "block-env-1", transfers))
    channel.run_once()
    assert bank.balances("PROG-1") == (Decimal("30.00"), Decimal("30.00"))
    bank.assert_invariants()


def test_every_transaction_rejected_is_answered_per_transaction_without_a_group_status(
    client: Client, channel: FileChannelWorker, funded: str, sessions: sessionmaker[Session]
) -> None:
    transfers = [
        transfer("x-1", "500.00"),
        transfer("x-2", "1.00", "NO-SUCH-ACCOUNT", THIS_BANK),
    ]
    client.upload("batch-x", pain001("batch-x", funded, transfers))
    channel.run_once()
    group, statuses = report(client, "batch-x")
    # No group RJCT: the bridge would refuse the batch whole instead of failing each one.
    assert group.status is None and not group.is_rejected
    assert {r: s.reasons[0].code for r, s in statuses.items()} == {"x-1": "AM04", "x-2": "AC01"}
    assert count(sessions, Payment) == 0 and count(sessions, PaymentBatch) == 0


def test_an_unknown_debtor_account_is_rejected_per_transaction(
    client: Client, channel: FileChannelWorker, bank: Bank
) -> None:
    client.upload("batch-u", pain001("batch-u", "block-env-1", [transfer("u-1", "1.00")]))
    channel.run_once()
    _, statuses = report(client, "batch-u")
    assert statuses["u-1"].status == "RJCT" and statuses["u-1"].reasons[0].code == "AC01"


def test_an_amount_beyond_what_the_ledger_holds_is_rejected(
    client: Client, channel: FileChannelWorker, funded: str
) -> None:
    # More than the bridge's writer would ever write (it stops at 10^14): written by hand.
    data = pain001("batch-big", funded, [transfer("big-1", "1.00")])
    client.upload("batch-big", data.replace(b">1.00<", b">1000000000000000.00<"))
    channel.run_once()
    _, statuses = report(client, "batch-big")
    assert statuses["big-1"].reasons[0].code == "AM02"
