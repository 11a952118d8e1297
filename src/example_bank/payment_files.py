"""Taking in a pain.001 payment file and answering it with a pain.002.

The file becomes one payment batch through :func:`example_bank.services.accept_payments`, so it
is paid exactly as a batch posted to ``/initiate_payment`` is (funds blocks, ledger, returns of
failed payments: :mod:`example_bank.processing`). What differs is the answer: instead of
refusing a whole request, each transaction gets its own status, as banks answer files:

* ``AC01`` the beneficiary account is said to be at this bank, which has no such account (in
  the currency); the JSON channel would pay it into suspense and return it;
* ``AM04`` the funds block named for it is not the debtor account's or has too little left,
  or, for funds arranged beforehand, the account's available balance is used up
  (transactions are taken in file order until the money runs out);
* ``AM03`` its currency is not the funds block's; ``AM12`` its amount has more decimals than
  the bank books; ``AM02`` it is a quadrillion or more;
* a transaction whose end-to-end id this bank already received (from another file) is
  reported accepted, with a note, and is not paid again.

Funds: ``InstrForDbtrAgt`` names the block to pay from, as blocked through ``/block_funds``.
A reference this bank never issued (the bridge's ``funds=prearranged`` profile writes its own
key, ``block-<envelope id>``) means the funds were arranged beforehand: the accepted
transactions are blocked on the debtor account's available balance when the file is taken in
(one block per file, its idempotency key the message id), so they are paid by the same
processing, from money that is really there.

A file that cannot be read, or whose declared totals are wrong, is refused whole (group
``RJCT`` with ``FF01``, ``AM18``, ``AM10`` or ``AM05``) and nothing of it is kept but the answer.
The message id is the key of the answer: a file delivered again is answered with the stored
report, byte for byte, and changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from example_bank.models import CENT, CUSTOMER, Account, FundBlock, PaymentFile, utcnow
from example_bank.services import (
    ZERO,
    _pending_per_block,
    accept_payments,
    block_funds,
    existing_references,
    matching,
)
from example_bank.settings import BankSettings
from g2p_bridge.formats.iso20022 import (
    CreditTransfer,
    IbanAccount,
    MobileWallet,
    OtherAccount,
    Pain001GroupHeader,
    Pain001PaymentInformation,
    Pain001Refused,
    Pain001Transaction,
    StatusReason,
    StatusReportHeader,
    TransactionStatusLine,
    iter_pain001,
    write_pain002,
)

# What a payment file in the inbox is called: <message id>.pain001.xml, the id in the charset
# and length of an ISO 20022 Max35Text identifier that is also a safe file name.
PAYMENT_FILE = re.compile(r"(?P<id>[A-Za-z0-9][A-Za-z0-9._-]{0,34})\.pain001\.xml")
PAIN002_SUFFIX = ".pain002.xml"

# Above this a payment is refused (AM02): the embedded SQLite ledger keeps integer cents, and
# sums of amounts this large would leave 64 bits.
LARGEST_AMOUNT = Decimal(10) ** 15

ACCEPTED = "ACCP"
PARTIAL = "PART"
REJECTED = "RJCT"
EVERY_ONE_REJECTED = "TXRJ"  # recorded as such; the pain.002 has no group status then


@dataclass(frozen=True, slots=True)
class PaymentFileAnswer:
    message_id: str
    pain002: bytes
    group_status: str
    batch_id: int | None
    accepted: int
    rejected: int
    repeated: bool  # the file had been answered before; nothing was done now


def message_id_of(file_name: str) -> str | None:
    """The message id a payment file's name carries, or None for any other name (a ``.part``
    still being uploaded, or anything else)."""
    match = PAYMENT_FILE.fullmatch(file_name)
    return match.group("id") if match else None


def answer_name(message_id: str) -> str:
    return message_id + PAIN002_SUFFIX


def report_id(message_id: str) -> str:
    """The pain.002's own MsgId: derived from the answered id, so it is the same every time."""
    return "EBSTS" + hashlib.sha256(message_id.encode()).hexdigest()[:30]


def _stored(row: PaymentFile) -> PaymentFileAnswer:
    return PaymentFileAnswer(
        message_id=row.message_id,
        pain002=row.pain002.encode(),
        group_status=row.group_status,
        batch_id=row.batch_id,
        accepted=row.accepted_count,
        rejected=row.transaction_count - row.accepted_count,
        repeated=True,
    )


def stored_answer(session: Session, message_id: str) -> PaymentFileAnswer | None:
    row = session.get(PaymentFile, message_id)
    return _stored(row) if row is not None else None


def receive_payment_file(session: Session, path: Path, settings: BankSettings) -> PaymentFileAnswer:
    """Take in the pain.001 at ``path`` (named ``<message id>.pain001.xml``) and return its
    answer; the caller commits, then writes the answer to the outbox.

    Idempotent: a message id answered before gets the stored answer and nothing changes.
    Concurrent calls for one file conflict on the ``payment_files`` key (the claim, inserted
    first): the loser's transaction fails and its next attempt finds the stored answer.
    """
    message_id = message_id_of(path.name)
    if message_id is None:
        raise ValueError(f"{path.name!r} is not the name of a payment file")
    previous = stored_answer(session, message_id)
    if previous is not None:
        return previous
    digest = _sha256(path)
    claim = PaymentFile(
        message_id=message_id,
        file_name=path.name,
        content_sha256=digest,
        group_status=REJECTED,
        transaction_count=0,
        accepted_count=0,
        report_id=report_id(message_id),
        pain002="",
        received_at=utcnow(),
    )
    session.add(claim)
    session.flush()  # the claim: a second taker of this file waits here, then fails

    statuses: list[TransactionStatusLine] = []
    header: Pain001GroupHeader | None = None
    block: Pain001PaymentInformation | None = None
    batch_id: int | None = None
    try:
        if path.stat().st_size > settings.sftp_max_file_bytes:
            raise Pain001Refused(
                f"the file is larger than the {settings.sftp_max_file_bytes} bytes accepted"
            )
        header, blocks, transactions = _read(path)
        if header.message_id != message_id:
            raise Pain001Refused(
                f"the file is named for message {message_id!r} but its MsgId is "
                f"{header.message_id[:40]!r}"
            )
        if len(blocks) != 1:
            raise Pain001Refused(
                f"the file has {len(blocks)} payment information blocks; this bank takes one"
            )
        block = blocks[0]
        statuses, instructions = _decide(session, settings, message_id, block, transactions)
        if instructions:
            batch_id = accept_payments(session, instructions).batch_id
    except Pain001Refused as refused:
        group = REJECTED
        reasons: tuple[StatusReason, ...] = (StatusReason(refused.code, refused.reason),)
        block = None
        statuses = []
        claim.message_name = header.message_name if header is not None else None
    else:
        rejected = sum(1 for s in statuses if s.status == REJECTED)
        # Every transaction refused on its own: no group status, so that the reader fails each
        # with its own reason instead of refusing the batch as a whole (a group RJCT).
        if rejected == 0:
            group = ACCEPTED
        else:
            group = EVERY_ONE_REJECTED if rejected == len(statuses) else PARTIAL
        reasons = ()
        claim.message_name = header.message_name
    answer = _pain002(message_id, header, block, group, reasons, statuses)
    claim.group_status = group
    claim.batch_id = batch_id
    claim.transaction_count = len(statuses)
    claim.accepted_count = sum(1 for s in statuses if s.status != REJECTED)
    claim.pain002 = answer.decode()
    session.flush()
    return PaymentFileAnswer(
        message_id=message_id,
        pain002=answer,
        group_status=group,
        batch_id=batch_id,
        accepted=claim.accepted_count,
        rejected=claim.transaction_count - claim.accepted_count,
        repeated=False,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read(
    path: Path,
) -> tuple[Pain001GroupHeader, list[Pain001PaymentInformation], list[Pain001Transaction]]:
    header: Pain001GroupHeader | None = None
    blocks: list[Pain001PaymentInformation] = []
    transactions: list[Pain001Transaction] = []
    with open(path, "rb") as source:
        # Nothing read is used until the reader has checked the file's totals at its end.
        for item in iter_pain001(source):
            if isinstance(item, Pain001GroupHeader):
                header = item
            elif isinstance(item, Pain001PaymentInformation):
                blocks.append(item)
            else:
                transactions.append(item)
    if header is None:  # the reader refuses a file without one; kept for the type checker
        raise Pain001Refused("the file has no group header")
    return header, blocks, transactions


def _account_number(account: IbanAccount | OtherAccount | MobileWallet) -> str:
    if isinstance(account, IbanAccount):
        return account.iban
    if isinstance(account, MobileWallet):
        return account.msisdn
    return account.number


def _instruction(
    transfer: CreditTransfer, block: Pain001PaymentInformation, funds_block: str | None
) -> dict[str, Any]:
    """The payment row ``accept_payments`` stores, as ``/initiate_payment`` would get it."""
    agent = transfer.creditor_agent
    code = (agent.member_id or agent.other_id or agent.bic or agent.name) if agent else None
    account = transfer.creditor_account
    wallet = isinstance(account, MobileWallet)
    email = isinstance(account, OtherAccount) and account.scheme_proprietary == "EMAIL"
    when = block.requested_execution_date
    return {
        "payment_reference_number": transfer.end_to_end_id,
        "remitting_account": _account_number(block.debtor_account),
        "remitting_account_currency": transfer.currency,
        "payment_amount": transfer.amount,
        "funds_blocked_reference_number": funds_block,
        "beneficiary_name": transfer.creditor_name[:200] or None,
        "beneficiary_account": _account_number(account)[:64],
        "beneficiary_account_currency": transfer.currency,
        "beneficiary_account_type": (
            "MOBILE_WALLET" if wallet else "EMAIL_WALLET" if email else "BANK_ACCOUNT"
        ),
        "beneficiary_bank_code": None if wallet or email else code,
        "beneficiary_branch_code": agent.branch_id if agent else None,
        "beneficiary_mobile_wallet_provider": code if wallet else None,
        "beneficiary_phone_no": account.msisdn[:32] if isinstance(account, MobileWallet) else None,
        "beneficiary_email": _account_number(account)[:200] if email else None,
        "beneficiary_email_wallet_provider": code if email else None,
        "narrative_1": transfer.remittance[:200] if transfer.remittance else None,
        "payment_date": when.isoformat() if when else None,
    }


def _decide(
    session: Session,
    settings: BankSettings,
    message_id: str,
    block: Pain001PaymentInformation,
    transactions: list[Pain001Transaction],
) -> tuple[list[TransactionStatusLine], list[dict[str, Any]]]:
    """Each transaction's status, and the instructions to accept (file order)."""
    own_code = settings.bank_code.upper()
    debtor = _account_number(block.debtor_account)
    instructions = [_instruction(t.transfer, block, t.funds_block_reference) for t in transactions]
    already = existing_references(session, [i["payment_reference_number"] for i in instructions])
    block_refs = sorted({i["funds_blocked_reference_number"] for i in instructions if i[
        "funds_blocked_reference_number"]})  # fmt: skip
    blocks: dict[str, FundBlock] = {}
    for clause in matching(session, FundBlock.block_reference, block_refs):
        # Locked as accept_payments locks them: two files must not spend one remainder.
        stmt = select(FundBlock).where(clause).order_by(FundBlock.block_reference).with_for_update()
        blocks.update((b.block_reference, b) for b in session.scalars(stmt))
    left: dict[str, Decimal] = defaultdict(lambda: ZERO)
    pending = _pending_per_block(session, list(blocks))
    for reference, funds in blocks.items():
        left[reference] = funds.remaining - pending.get(reference, ZERO)
    own_accounts = _own_accounts(session, instructions, own_code)
    # Funds arranged beforehand (a block reference this bank never issued): what the debtor
    # account has available, locked so that two files cannot both spend it.
    prearranged = any(i["funds_blocked_reference_number"] not in blocks for i in instructions)
    debtor_account = (
        session.scalars(
            select(Account).where(Account.account_number == debtor).with_for_update()
        ).one_or_none()
        if prearranged
        else None
    )
    if debtor_account is not None:
        left[_PREARRANGED] = debtor_account.book_balance - debtor_account.blocked_amount

    statuses: list[TransactionStatusLine] = []
    accepted: list[dict[str, Any]] = []
    for instruction in instructions:
        reference = instruction["payment_reference_number"]
        if reference in already:
            statuses.append(
                TransactionStatusLine(
                    reference,
                    ACCEPTED,
                    (StatusReason(None, "already received in an earlier file; paid once"),),
                )
            )
            continue
        reason = _refusal(instruction, blocks, left, debtor, debtor_account, own_code, own_accounts)
        if reason is not None:
            statuses.append(TransactionStatusLine(reference, REJECTED, (reason,)))
            continue
        funds_reference = instruction["funds_blocked_reference_number"]
        if funds_reference not in blocks:
            funds_reference = _PREARRANGED
        left[funds_reference] -= instruction["payment_amount"]
        statuses.append(TransactionStatusLine(reference, ACCEPTED))
        accepted.append(instruction)
    arranged = [i for i in accepted if i["funds_blocked_reference_number"] not in blocks]
    if arranged and debtor_account is not None:
        total = sum((i["payment_amount"] for i in arranged), ZERO)
        result = block_funds(
            session,
            debtor,
            debtor_account.currency,
            total,
            idempotency_key=f"pain001:{message_id}",
        )
        if result.block_reference is None:  # checked above under the account's lock
            raise RuntimeError(f"file {message_id}: {result.error_message}")
        for instruction in arranged:
            instruction["funds_blocked_reference_number"] = result.block_reference
    return statuses, accepted


# The key under which the available balance of prearranged funds is counted down.
_PREARRANGED = "\x00prearranged"


def _refusal(
    instruction: dict[str, Any],
    blocks: dict[str, FundBlock],
    left: dict[str, Decimal],
    debtor: str,
    debtor_account: Account | None,
    own_code: str,
    own_accounts: dict[str, str],
) -> StatusReason | None:
    amount: Decimal = instruction["payment_amount"]
    currency: str = instruction["remitting_account_currency"]
    if amount != amount.quantize(CENT):
        return StatusReason("AM12", f"amount {amount} has more decimals than this bank books")
    if amount >= LARGEST_AMOUNT:
        return StatusReason("AM02", f"amount {amount} is above what this bank pays at once")
    reference = instruction["funds_blocked_reference_number"]
    funds = blocks.get(reference) if reference else None
    if funds is None:
        if debtor_account is None:
            return StatusReason("AC01", f"no account {debtor} at this bank")
        if debtor_account.currency != currency:
            return StatusReason("AM03", f"account {debtor} is not in {currency}")
        reference = _PREARRANGED
    elif funds.account_number != debtor:
        return StatusReason("AM04", f"block {reference} does not earmark funds of {debtor}")
    elif funds.currency != currency:
        return StatusReason("AM03", f"currency {currency} is not block {reference}'s")
    if (instruction["beneficiary_bank_code"] or "").upper() == own_code and own_accounts.get(
        instruction["beneficiary_account"]
    ) != currency:
        return StatusReason(
            "AC01", f"no {currency} account {instruction['beneficiary_account']} at this bank"
        )
    if amount > left[reference]:
        where = f"account {debtor}" if reference == _PREARRANGED else f"block {reference}"
        return StatusReason("AM04", f"insufficient funds left in {where}")
    return None


def _own_accounts(
    session: Session, instructions: list[dict[str, Any]], own_code: str
) -> dict[str, str]:
    wanted = sorted(
        {
            i["beneficiary_account"]
            for i in instructions
            if (i["beneficiary_bank_code"] or "").upper() == own_code
        }
    )
    found: dict[str, str] = {}
    for clause in matching(session, Account.account_number, wanted):
        stmt = select(Account.account_number, Account.currency).where(
            clause, Account.account_type == CUSTOMER
        )
        found.update((number, currency) for number, currency in session.execute(stmt))
    return found


def _pain002(
    message_id: str,
    header: Pain001GroupHeader | None,
    block: Pain001PaymentInformation | None,
    group: str,
    reasons: tuple[StatusReason, ...],
    statuses: list[TransactionStatusLine],
) -> bytes:
    out = io.BytesIO()
    write_pain002(
        out,
        StatusReportHeader(
            report_id=report_id(message_id),
            created_at=utcnow(),
            original_message_id=message_id,
            original_message_name=header.message_name if header is not None else "pain.001",
            group_status=None if group == EVERY_ONE_REJECTED else group,
            group_reasons=reasons,
            original_number_of_transactions=(
                header.number_of_transactions if header is not None else None
            ),
            original_control_sum=header.control_sum if header is not None else None,
            original_payment_information_id=(
                block.payment_information_id if block is not None else None
            ),
            payment_information_status=(
                group if block is not None and group != EVERY_ONE_REJECTED else None
            ),
        ),
        statuses,
    )
    return out.getvalue()
