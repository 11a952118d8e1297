"""A sponsor bank reached with ISO 20022 files over SFTP (docs/banks.md has the contract).

Out: one pain.001 per bank batch, written to ``inbox/<batch id>.pain001.xml.part`` and renamed
to its final name once complete. The file is built from stored rows only (the batch's creation
time, its execution date, the payments in id order), so a resend after a crash writes the same
bytes: a final name already holding them is a delivery already made, never a second one.
In: the bank's outbox (pain.002 status reports, camt.053/camt.054 and MT940 statements), which
core/bank_files.py polls through :meth:`open_outbox`.

Funds: banks do not check or earmark funds over files. The profile says how the bank-ops side
arranges them: ``prearranged`` (the program account is funded for the payroll beforehand; the
bank refuses a file it cannot cover, AM04 in pain.002) or ``example-bank-api`` (check and block
through the bank's JSON API, and send the payments as files)."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from g2p_bridge.connectors.banks.base import (
    BankConnector,
    BankRejected,
    BlockResult,
    FundsCheck,
    Outbox,
    PaymentBatchInfo,
    PaymentBatchResult,
    PaymentInstruction,
    ReleaseResult,
    RemoteFile,
)
from g2p_bridge.connectors.banks.example_bank import ExampleBankConnector
from g2p_bridge.connectors.banks.sftp import SftpServer, SftpSession
from g2p_bridge.formats.iso20022 import (
    CreditTransfer,
    FinancialInstitution,
    IbanAccount,
    ISO20022Error,
    MobileWallet,
    OtherAccount,
    Pain001Profile,
    PaymentBatch,
    write_pain001,
)
from g2p_bridge.models.enums import FinancialAddressType
from g2p_bridge.settings import BankConnectorSettings

# Remittance information is informational (reconciliation matches on EndToEndId): a narrative
# longer than Ustrd's 140 characters is shortened rather than failing the whole file.
_USTRD_MAX = 140


class Iso20022SftpConnector(BankConnector):
    def __init__(self, settings: BankConnectorSettings) -> None:
        super().__init__(settings)
        self.server = SftpServer(settings.sftp)
        self.poll_interval_seconds = settings.poll_interval_seconds
        self.profile = Pain001Profile(
            version=settings.pain001_version,
            latin_only=settings.latin_only,
            charge_bearer=settings.charge_bearer,
        )
        self._funds_api = (
            ExampleBankConnector(settings) if settings.funds == "example-bank-api" else None
        )

    # -- funds

    def check_funds(self, account_number: str, currency: str, amount: Decimal) -> FundsCheck:
        if self._funds_api is not None:
            return self._funds_api.check_funds(account_number, currency, amount)
        return FundsCheck(
            sufficient=True,
            detail="funds pre-arranged with the bank; a file it cannot cover is refused (AM04)",
        )

    def block_funds(
        self, account_number: str, currency: str, amount: Decimal, idempotency_key: str
    ) -> BlockResult:
        if self._funds_api is not None:
            return self._funds_api.block_funds(account_number, currency, amount, idempotency_key)
        # No earmark exists at the bank: the key itself is the reference the payment files
        # carry (InstrForDbtrAgt), so the bank can tie every file to the envelope.
        return BlockResult(blocked=True, reference=idempotency_key, detail="pre-arranged")

    def release_funds(
        self,
        account_number: str,
        currency: str,
        amount: Decimal,
        block_reference: str,
        idempotency_key: str,
    ) -> ReleaseResult:
        if self._funds_api is not None:
            return self._funds_api.release_funds(
                account_number, currency, amount, block_reference, idempotency_key
            )
        # Pre-arranged funds were never earmarked by the bridge, so there is nothing to give
        # back: the bank settles each file against the account and keeps no block for it.
        return ReleaseResult(
            released=True, reference=idempotency_key, detail="pre-arranged: nothing earmarked"
        )

    # -- payments

    def initiate_payment(self, payments: list[PaymentInstruction]) -> PaymentBatchResult:
        raise BankRejected("the ISO 20022 SFTP channel sends whole batches (initiate_batch)")

    def file_name(self, batch_id: str) -> str:
        return self.settings.payment_file_name.format(batch_id=batch_id)

    def initiate_batch(
        self, batch: PaymentBatchInfo, payments: list[PaymentInstruction]
    ) -> PaymentBatchResult:
        name = self.file_name(batch.batch_id)
        inbox = self.settings.sftp.inbox_dir
        with tempfile.TemporaryFile() as spool:
            try:
                write_pain001(
                    spool,
                    self._header(batch, payments),
                    map(self._transfer, payments),
                    self.profile,
                )
            except ISO20022Error as exc:
                raise BankRejected(f"the payment file cannot be written: {exc.reason}") from exc
            size = spool.tell()
            spool.seek(0)
            digest = hashlib.file_digest(spool, "sha256").hexdigest()
            with self.server.session() as sftp:
                there = sftp.sha256_of(f"{inbox}/{name}")
                if there == digest:
                    return PaymentBatchResult(
                        accepted=True,
                        detail=f"{inbox}/{name} was already delivered (sha256 {digest})",
                        duplicates=tuple(p.payment_reference for p in payments),
                    )
                if there is not None:
                    # Only this batch's file has this name, and a delivered file is never
                    # replaced: the bank has the batch (it refuses a repeated MsgId anyway).
                    return PaymentBatchResult(
                        accepted=True,
                        detail=f"{inbox}/{name} was already delivered with other content "
                        f"(sha256 {there}); left as it is",
                        duplicates=tuple(p.payment_reference for p in payments),
                    )
                sftp.put_atomic(inbox, name, spool, size)
        return PaymentBatchResult(
            accepted=True, detail=f"delivered {inbox}/{name} ({size} bytes, sha256 {digest})"
        )

    def _account(self, number: str) -> IbanAccount | OtherAccount:
        if self.settings.account_scheme == "IBAN":
            return IbanAccount(number)
        return OtherAccount(number, scheme_code=self.settings.account_scheme)

    def _header(self, batch: PaymentBatchInfo, payments: list[PaymentInstruction]) -> PaymentBatch:
        s = self.settings
        agent = FinancialInstitution(
            bic=s.bank_bic,
            member_id=s.bank_member_id,
            # The EPC's convention for an agent the file need not identify.
            other_id=None if (s.bank_bic or s.bank_member_id) else "NOTPROVIDED",
            branch_id=batch.debtor_branch_code,
        )
        return PaymentBatch(
            message_id=batch.batch_id,
            created_at=batch.created_at,
            initiating_party=s.initiating_party_name,
            debtor_name=batch.debtor_name,
            debtor_account=self._account(batch.debtor_account),
            debtor_agent=agent,
            requested_execution_date=batch.execution_date,
            currency=batch.currency,
            number_of_transactions=len(payments),
            control_sum=sum((p.amount for p in payments), Decimal(0)),
            funds_block_reference=batch.block_reference,
            batch_booking=s.batch_booking,
        )

    def _transfer(self, p: PaymentInstruction) -> CreditTransfer:
        account: IbanAccount | OtherAccount | MobileWallet
        agent: FinancialInstitution | None
        kind = p.beneficiary_account_type
        if kind == FinancialAddressType.MOBILE_WALLET:
            account = MobileWallet(p.beneficiary_phone or "")
            agent = FinancialInstitution(other_id=p.beneficiary_mobile_wallet_provider)
        elif kind == FinancialAddressType.EMAIL_WALLET:
            account = OtherAccount(
                p.beneficiary_email or "", scheme_code=None, scheme_proprietary="EMAIL"
            )
            agent = FinancialInstitution(other_id=p.beneficiary_email_wallet_provider)
        else:
            account = self._account(p.beneficiary_account or "")
            agent = (
                FinancialInstitution(
                    member_id=p.beneficiary_bank_code, branch_id=p.beneficiary_branch_code
                )
                if p.beneficiary_bank_code
                else None
            )
        narrative = p.narratives[0] if p.narratives else ""
        return CreditTransfer(
            end_to_end_id=p.payment_reference,
            amount=p.amount,
            currency=p.remitting_currency,
            creditor_name=p.beneficiary_name,
            creditor_account=account,
            creditor_agent=agent,
            remittance=narrative[:_USTRD_MAX] if narrative.strip() else None,
        )

    # -- the outbox

    @contextmanager
    def open_outbox(self) -> Iterator[Outbox]:
        with self.server.session() as sftp:
            sftp.ensure_directory(self.settings.sftp.archive_dir)
            yield _SftpOutbox(sftp, self.settings)

    def close(self) -> None:
        if self._funds_api is not None:
            self._funds_api.close()


class _SftpOutbox:
    def __init__(self, sftp: SftpSession, settings: BankConnectorSettings) -> None:
        self._sftp = sftp
        self._dirs = settings.sftp

    def list(self) -> list[RemoteFile]:
        return self._sftp.list(self._dirs.outbox_dir)

    def read(self, name: str) -> bytes:
        return self._sftp.read(f"{self._dirs.outbox_dir}/{name}", self._dirs.max_file_bytes)

    def archive(self, name: str, content_sha256: str) -> str:
        source = f"{self._dirs.outbox_dir}/{name}"
        return self._sftp.move(source, self._dirs.archive_dir, name, content_sha256)

    @property
    def max_file_bytes(self) -> int:
        return self._dirs.max_file_bytes
