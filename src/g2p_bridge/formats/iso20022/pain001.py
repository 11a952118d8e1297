"""pain.001 customer credit transfer initiation: one file per bank batch, written as it streams.

Versions ``pain.001.001.09`` (SEPA 2019 rulebooks, CBPR+-era banks) and ``pain.001.001.03``
(CGI-MP and the many banks still documenting it) are written from the same typed input; a bank
profile (:class:`Pain001Profile`) picks the version and whether text is restricted to the SEPA
character set.

Where our fields go (docs/banks.md has the full table):

* ``GrpHdr/MsgId`` and, unless told otherwise, ``PmtInf/PmtInfId`` are the batch id: banks
  refuse a repeated ``MsgId``/``PmtInfId``, which is exactly the duplicate protection a re-sent
  batch needs.
* The funds block reference goes to ``InstrForDbtrAgt`` (the instruction to the bank holding the
  program account: pay this from the earmarked funds). In .09 it is written once on ``PmtInf``;
  .03 has no ``PmtInf/InstrForDbtrAgt``, so there it is written on every transaction. It is not
  put in ``PmtInfId`` because one funds block covers many batches and ``PmtInfId`` must be unique.
* ``EndToEndId`` is the disbursement id: the bank returns it in pain.002 and camt.053/054, which
  is what reconciliation matches on. Longer than 35 characters is refused, never truncated (a
  truncated id would reconcile onto nothing, or onto another disbursement).
* Mobile wallets: the number is ``CdtrAcct/Id/Othr/Id`` with ``SchmeNm/Prtry`` ``MSISDN`` in
  both versions (``CdtrAcct/Id`` is mandatory in both), and .09 adds ``CdtrAcct/Prxy`` of type
  ``TELE`` with the same number. The wallet provider is the creditor agent.

Character set: ISO 20022 text is UTF-8 and G2P beneficiaries' names are often not Latin, so text
is written as given. A profile with ``latin_only=True`` (SEPA banks, and banks that say so)
*refuses* anything outside the SEPA Latin set instead of transliterating it: a transliterated
name is a different name, which the bank's name check may then reject or, worse, accept for the
wrong person; the caller must supply the bank-registered Latin spelling.

The writer's contract: ``write_pain001(out, ...)`` writes to a binary file object and raises
:class:`ISO20022Error` if any input is invalid or if the transactions do not add up to the
declared ``number_of_transactions``/``control_sum`` (both are needed in the group header before
the first transaction, so they are taken as input and verified while streaming). A failed write
leaves a partial file behind: write to a temporary name and rename on success, which
:func:`write_pain001_file` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Literal

from g2p_bridge.money import MAX_AMOUNT, is_known_currency, minor_units

from ._xml import NAMESPACE_PREFIX, ISO20022Error

__all__ = [
    "PAIN001_VERSIONS",
    "CreditTransfer",
    "FinancialInstitution",
    "IbanAccount",
    "MobileWallet",
    "OtherAccount",
    "Pain001Profile",
    "PaymentBatch",
    "write_pain001",
    "write_pain001_file",
]

Pain001Version = Literal["pain.001.001.03", "pain.001.001.09"]
PAIN001_VERSIONS: tuple[Pain001Version, ...] = ("pain.001.001.03", "pain.001.001.09")


@dataclass(frozen=True, slots=True)
class IbanAccount:
    iban: str


@dataclass(frozen=True, slots=True)
class OtherAccount:
    """A local account number (``Othr/Id``); the bank and branch are the account's agent."""

    number: str
    scheme_code: str | None = "BBAN"  # ExternalAccountIdentification1Code
    scheme_proprietary: str | None = None  # used instead of scheme_code when set
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class MobileWallet:
    """A mobile-money wallet identified by its phone number (MSISDN, international form)."""

    msisdn: str
    proxy_type: str = "TELE"  # ExternalProxyAccountType1Code, written in .09 only


CreditorAccount = IbanAccount | OtherAccount | MobileWallet


@dataclass(frozen=True, slots=True)
class FinancialInstitution:
    """A bank, branch or wallet provider. At least one identification must be given.

    ``member_id`` is a national clearing code (bank code, sort code, IFSC, ...), with
    ``clearing_system`` its ExternalClearingSystemIdentification1Code when the bank wants it;
    ``other_id`` is any other identifier (e.g. a wallet provider's short code).
    """

    bic: str | None = None
    member_id: str | None = None
    clearing_system: str | None = None
    other_id: str | None = None
    name: str | None = None
    branch_id: str | None = None


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    end_to_end_id: str  # the disbursement id
    amount: Decimal
    currency: str
    creditor_name: str
    creditor_account: CreditorAccount
    creditor_agent: FinancialInstitution | None = None
    remittance: str | None = None  # Ustrd, at most 140 characters
    instruction_id: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentBatch:
    """Everything in a pain.001 except its transactions."""

    message_id: str  # the bank batch id
    created_at: datetime  # timezone-aware
    initiating_party: str
    debtor_name: str
    debtor_account: IbanAccount | OtherAccount
    debtor_agent: FinancialInstitution
    requested_execution_date: date
    currency: str
    number_of_transactions: int
    control_sum: Decimal
    funds_block_reference: str | None = None
    payment_information_id: str | None = None  # defaults to message_id
    batch_booking: bool | None = None  # None: leave it to the bank's default


@dataclass(frozen=True, slots=True)
class Pain001Profile:
    version: Pain001Version = "pain.001.001.09"
    latin_only: bool = False
    # Some banks want a charge bearer on every file (SLEV under SEPA); None writes none.
    charge_bearer: str | None = None


# -- text rules --------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry at all; lxml would raise a bare ValueError on them.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# The SEPA / EPC basic Latin character set.
_LATIN = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]*")
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Za-z0-9]{1,30}")
# The schemas' own patterns: .09's BICFIDec2014Identifier, and .03's stricter BICIdentifier.
_BIC_09 = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")
_BIC_03 = re.compile(r"[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?")
_CHARGE_BEARERS = frozenset({"DEBT", "CRED", "SHAR", "SLEV"})
_CURRENCY = re.compile(r"[A-Z]{3}")


class _Text:
    """Checks one text value against its ISO 20022 length and the profile's character set."""

    __slots__ = ("latin_only",)

    def __init__(self, latin_only: bool) -> None:
        self.latin_only = latin_only

    def __call__(self, value: str, max_len: int, what: str) -> str:
        if not isinstance(value, str):
            raise ISO20022Error(f"{what} must be text, got {type(value).__name__}")
        if not value or not value.strip():
            raise ISO20022Error(f"{what} is empty")
        if len(value) > max_len:
            raise ISO20022Error(
                f"{what} is {len(value)} characters, more than the {max_len} ISO 20022 allows: "
                f"{value[:50]!r}; it is refused rather than truncated"
            )
        if _XML_ILLEGAL.search(value):
            raise ISO20022Error(f"{what} contains a control character XML cannot carry")
        if self.latin_only and not _LATIN.fullmatch(value):
            bad = next(c for c in value if not _LATIN.fullmatch(c))
            raise ISO20022Error(
                f"{what} {value[:50]!r} has {bad!r}, outside the Latin character set this bank "
                "accepts; supply the bank-registered Latin spelling"
            )
        return value


# -- writing -----------------------------------------------------------------------------------


def write_pain001(
    out: IO[bytes],
    batch: PaymentBatch,
    transactions: Iterable[CreditTransfer],
    profile: Pain001Profile = Pain001Profile(),
) -> None:
    """Write one pain.001 with one payment information block to the binary file ``out``.

    Raises :class:`ISO20022Error` on invalid input or when the transactions do not match the
    declared count and control sum; ``out`` then holds a partial, invalid document.
    """
    if profile.version not in PAIN001_VERSIONS:
        raise ISO20022Error(
            f"pain.001 version {profile.version!r} is not supported; "
            f"supported: {', '.join(PAIN001_VERSIONS)}"
        )
    writer = _Writer(batch, profile)
    namespace = NAMESPACE_PREFIX + profile.version
    pending: list[str] = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<Document xmlns="{namespace}"><CstmrCdtTrfInitn>',
        writer.group_header(),
        "<PmtInf>",
        writer.payment_information_head(),
    ]
    for transaction in transactions:
        pending.append(writer.transaction(transaction))
        if len(pending) >= _CHUNK:
            out.write("".join(pending).encode())
            pending.clear()
    writer.check_totals()
    pending.append("</PmtInf></CstmrCdtTrfInitn></Document>\n")
    out.write("".join(pending).encode())


# Transactions are encoded and written in groups of this many: memory stays flat (a few hundred
# kilobytes) and the file object sees few, large writes.
_CHUNK = 2000


def write_pain001_file(
    path: str | os.PathLike[str],
    batch: PaymentBatch,
    transactions: Iterable[CreditTransfer],
    profile: Pain001Profile = Pain001Profile(),
) -> Path:
    """Write to ``path`` atomically: a ``.part`` file renamed only when the whole file is right."""
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    try:
        with open(partial, "wb") as out:
            write_pain001(out, batch, transactions, profile)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


class _Writer:
    """Checks every value and builds each part of the document as escaped XML text; holds the
    running count and total that the header must match."""

    def __init__(self, batch: PaymentBatch, profile: Pain001Profile) -> None:
        self.batch = batch
        self.profile = profile
        self.v09 = profile.version == "pain.001.001.09"
        self.text = _Text(profile.latin_only)
        self.count = 0
        self.currency = self._currency(batch.currency, "batch currency")
        self.places = Decimal(1).scaleb(-minor_units(self.currency))
        self.seen_ids: set[str] = set()
        self.minor_units = minor_units(self.currency)
        self.total_minor = 0
        self.agents: dict[FinancialInstitution, str] = {}
        self._check_batch()

    # -- checks

    def _currency(self, code: str, what: str) -> str:
        if (
            not isinstance(code, str)
            or not _CURRENCY.fullmatch(code)
            or not is_known_currency(code)
        ):
            raise ISO20022Error(f"{what} {code!r} is not a known ISO 4217 currency code")
        return code

    def _amount(self, amount: Decimal, what: str) -> tuple[str, int]:
        """The amount as written ("100.50", "1500": plain notation, the currency's minor units,
        never an exponent) and as an integer count of minor units, for the exact running total.
        More decimals than the currency has is refused, not rounded: rounding is a payment of a
        different amount."""
        if not isinstance(amount, Decimal):
            # A float has already lost the exact amount; refuse it rather than guess.
            raise ISO20022Error(f"{what} must be a Decimal, got {type(amount).__name__}")
        try:
            quantized = amount.quantize(self.places)
        except InvalidOperation:
            quantized = None
        if quantized is None or quantized != amount or not 0 < amount < MAX_AMOUNT:
            raise ISO20022Error(
                f"{what} {amount} is not a positive {self.currency} amount below {MAX_AMOUNT} "
                f"with at most {self.minor_units} decimals"
            )
        # Exact: fewer than 19 significant digits, well inside the default 28-digit context.
        return f"{quantized:f}", int(quantized.scaleb(self.minor_units))

    def _check_batch(self) -> None:
        b = self.batch
        self.text(b.message_id, 35, "message id")
        if b.payment_information_id is not None:
            self.text(b.payment_information_id, 35, "payment information id")
        if b.created_at.tzinfo is None or b.created_at.utcoffset() is None:
            raise ISO20022Error("creation time must be timezone-aware")
        if not isinstance(b.number_of_transactions, int) or b.number_of_transactions < 1:
            raise ISO20022Error(
                f"number of transactions {b.number_of_transactions!r} must be a positive integer"
            )
        if b.number_of_transactions >= 10**15:
            raise ISO20022Error("number of transactions has more than 15 digits")
        if not isinstance(b.control_sum, Decimal) or not b.control_sum.is_finite():
            raise ISO20022Error("control sum must be a finite Decimal")
        try:
            exact = b.control_sum == b.control_sum.quantize(self.places)
        except InvalidOperation:  # more digits than any decimal context here holds
            exact = False
        if b.control_sum <= 0 or not exact:
            raise ISO20022Error(
                f"control sum {b.control_sum} is not a positive {self.currency} amount"
            )
        if len(f"{b.control_sum.quantize(self.places):f}".replace(".", "")) > 18:
            raise ISO20022Error(f"control sum {b.control_sum} has more than 18 digits")
        self.declared_minor = int(b.control_sum.quantize(self.places).scaleb(self.minor_units))
        if b.funds_block_reference is not None:
            self.text(b.funds_block_reference, 140, "funds block reference")

    def check_totals(self) -> None:
        b = self.batch
        if self.count != b.number_of_transactions or self.total_minor != self.declared_minor:
            raise ISO20022Error(
                f"batch {b.message_id}: the transactions number {self.count} totalling "
                f"{Decimal(self.total_minor).scaleb(-self.minor_units)} {self.currency}, but the "
                "header declares "
                f"{b.number_of_transactions} totalling {b.control_sum}; the file is not valid"
            )

    # -- parts: each returns a piece of XML text built from checked, escaped values

    def group_header(self) -> str:
        b = self.batch
        # Seconds precision with the offset: the form every bank's parser accepts.
        created = b.created_at.replace(microsecond=0).isoformat()
        initiator = _esc(self.text(b.initiating_party, 140, "initiating party name"))
        return (
            f"<GrpHdr><MsgId>{_esc(b.message_id)}</MsgId><CreDtTm>{created}</CreDtTm>"
            f"<NbOfTxs>{b.number_of_transactions}</NbOfTxs>"
            f"<CtrlSum>{b.control_sum.quantize(self.places):f}</CtrlSum>"
            f"<InitgPty><Nm>{initiator}</Nm></InitgPty></GrpHdr>"
        )

    def payment_information_head(self) -> str:
        b = self.batch
        parts = [f"<PmtInfId>{_esc(b.payment_information_id or b.message_id)}</PmtInfId>"]
        parts.append("<PmtMtd>TRF</PmtMtd>")
        if b.batch_booking is not None:
            parts.append(f"<BtchBookg>{'true' if b.batch_booking else 'false'}</BtchBookg>")
        parts.append(f"<NbOfTxs>{b.number_of_transactions}</NbOfTxs>")
        parts.append(f"<CtrlSum>{b.control_sum.quantize(self.places):f}</CtrlSum>")
        when = b.requested_execution_date.isoformat()
        # .09 made the execution date a choice of date or date-time.
        parts.append(f"<ReqdExctnDt><Dt>{when}</Dt></ReqdExctnDt>" if self.v09 else
                     f"<ReqdExctnDt>{when}</ReqdExctnDt>")  # fmt: skip
        parts.append(f"<Dbtr><Nm>{_esc(self.text(b.debtor_name, 140, 'debtor name'))}</Nm></Dbtr>")
        parts.append(
            f"<DbtrAcct>{self._account_id(b.debtor_account, 'debtor account')}"
            f"<Ccy>{self.currency}</Ccy></DbtrAcct>"
        )
        parts.append(f"<DbtrAgt>{self._agent(b.debtor_agent, 'debtor agent')}</DbtrAgt>")
        if self.v09 and b.funds_block_reference is not None:
            parts.append(f"<InstrForDbtrAgt>{_esc(b.funds_block_reference)}</InstrForDbtrAgt>")
        if self.profile.charge_bearer is not None:
            if self.profile.charge_bearer not in _CHARGE_BEARERS:
                raise ISO20022Error(
                    f"charge bearer {self.profile.charge_bearer!r} is not one of "
                    f"{', '.join(sorted(_CHARGE_BEARERS))}"
                )
            parts.append(f"<ChrgBr>{self.profile.charge_bearer}</ChrgBr>")
        return "".join(parts)

    def transaction(self, tx: CreditTransfer) -> str:
        try:
            return self._transaction(tx)
        except ISO20022Error as exc:
            # The position and id are added here, once, rather than formatted into a context
            # string for every field of every transaction on the fast path.
            raise ISO20022Error(
                f"transaction {self.count + 1} ({str(tx.end_to_end_id)[:40]!r}): {exc.reason}"
            ) from None

    def _transaction(self, tx: CreditTransfer) -> str:
        end_to_end = self.text(tx.end_to_end_id, 35, "end-to-end id (disbursement id)")
        if end_to_end in self.seen_ids:
            # Every later answer is matched on this id; two payments with one id are ambiguous.
            raise ISO20022Error("end-to-end id appears twice in the batch")
        currency = tx.currency
        if currency != self.currency:
            raise ISO20022Error(
                f"currency {currency!r} differs from the batch currency {self.currency}"
            )
        amount, minor = self._amount(tx.amount, "amount")
        if self.count >= self.batch.number_of_transactions:
            raise ISO20022Error(
                f"more transactions than the {self.batch.number_of_transactions} declared in "
                "the header"
            )
        parts = ["<CdtTrfTxInf><PmtId>"]
        if tx.instruction_id is not None:
            instruction = _esc(self.text(tx.instruction_id, 35, "instruction id"))
            parts.append(f"<InstrId>{instruction}</InstrId>")
        parts.append(f'<EndToEndId>{_esc(end_to_end)}</EndToEndId></PmtId>'
                     f'<Amt><InstdAmt Ccy="{currency}">{amount}</InstdAmt></Amt>')  # fmt: skip
        account = tx.creditor_account
        if tx.creditor_agent is not None:
            parts.append(f"<CdtrAgt>{self._agent(tx.creditor_agent, 'creditor agent')}"
                         "</CdtrAgt>")  # fmt: skip
        elif not isinstance(account, IbanAccount):
            # A local account number or a phone number means nothing without its bank/provider.
            raise ISO20022Error("a non-IBAN creditor account needs a creditor agent")
        name = _esc(self.text(tx.creditor_name, 140, "creditor name"))
        parts.append(f"<Cdtr><Nm>{name}</Nm></Cdtr>")
        parts.append(f"<CdtrAcct>{self._creditor_account(account)}</CdtrAcct>")
        if not self.v09 and self.batch.funds_block_reference is not None:
            # .03 has no InstrForDbtrAgt on PmtInf; the transaction-level one is the only place.
            parts.append(
                f"<InstrForDbtrAgt>{_esc(self.batch.funds_block_reference)}</InstrForDbtrAgt>"
            )
        if tx.remittance is not None:
            remittance = _esc(self.text(tx.remittance, 140, "remittance"))
            parts.append(f"<RmtInf><Ustrd>{remittance}</Ustrd></RmtInf>")
        parts.append("</CdtTrfTxInf>")
        # Counted only once the whole transaction is known to be valid.
        self.seen_ids.add(end_to_end)
        self.count += 1
        self.total_minor += minor
        return "".join(parts)

    def _creditor_account(self, account: CreditorAccount) -> str:
        if isinstance(account, MobileWallet):
            number = _esc(self.text(account.msisdn, 34, "mobile wallet number"))
            # Both versions require CdtrAcct/Id, so the number is always an Othr id; .09 also
            # says what kind of proxy it is, which is how its banks route to a wallet.
            text = (
                f"<Id><Othr><Id>{number}</Id><SchmeNm><Prtry>MSISDN</Prtry></SchmeNm></Othr></Id>"
            )
            if self.v09:
                kind = self._code(account.proxy_type, "proxy type")
                text += f"<Prxy><Tp><Cd>{kind}</Cd></Tp><Id>{number}</Id></Prxy>"
            return text
        return self._account_id(account, "creditor account")

    def _account_id(self, account: IbanAccount | OtherAccount, what: str) -> str:
        if isinstance(account, IbanAccount):
            return f"<Id><IBAN>{_check_iban(account.iban, what)}</IBAN></Id>"
        if not isinstance(account, OtherAccount):
            raise ISO20022Error(f"{what}: {type(account).__name__} cannot be used here")
        parts = [f"<Id><Othr><Id>{_esc(self.text(account.number, 34, f'{what} number'))}</Id>"]
        if account.scheme_proprietary is not None:
            scheme = _esc(self.text(account.scheme_proprietary, 35, f"{what} scheme"))
            parts.append(f"<SchmeNm><Prtry>{scheme}</Prtry></SchmeNm>")
        elif account.scheme_code is not None:
            parts.append(f"<SchmeNm><Cd>{self._code(account.scheme_code, f'{what} scheme')}</Cd>"
                         "</SchmeNm>")  # fmt: skip
        if account.issuer is not None:
            parts.append(f"<Issr>{_esc(self.text(account.issuer, 35, f'{what} issuer'))}</Issr>")
        parts.append("</Othr></Id>")
        return "".join(parts)

    def _agent(self, agent: FinancialInstitution, what: str) -> str:
        # Most batches name the same few banks and providers thousands of times.
        cached = self.agents.get(agent)
        if cached is not None:
            return cached
        if not (agent.bic or agent.member_id or agent.other_id or agent.name):
            raise ISO20022Error(f"{what} has no BIC, clearing member id, other id or name")
        parts = ["<FinInstnId>"]
        if agent.bic is not None:
            pattern = _BIC_09 if self.v09 else _BIC_03
            if not isinstance(agent.bic, str) or not pattern.fullmatch(agent.bic):
                raise ISO20022Error(f"{what}: {agent.bic!r} is not a BIC")
            tag = "BICFI" if self.v09 else "BIC"
            parts.append(f"<{tag}>{agent.bic}</{tag}>")
        if agent.member_id is not None:
            parts.append("<ClrSysMmbId>")
            if agent.clearing_system is not None:
                system = self._code(agent.clearing_system, f"{what} clearing system", 5)
                parts.append(f"<ClrSysId><Cd>{system}</Cd></ClrSysId>")
            member = _esc(self.text(agent.member_id, 35, f"{what} member id"))
            parts.append(f"<MmbId>{member}</MmbId></ClrSysMmbId>")
        if agent.name is not None:
            parts.append(f"<Nm>{_esc(self.text(agent.name, 140, f'{what} name'))}</Nm>")
        if agent.other_id is not None:
            other = _esc(self.text(agent.other_id, 35, f"{what} other id"))
            parts.append(f"<Othr><Id>{other}</Id></Othr>")
        parts.append("</FinInstnId>")
        if agent.branch_id is not None:
            branch = _esc(self.text(agent.branch_id, 35, f"{what} branch id"))
            parts.append(f"<BrnchId><Id>{branch}</Id></BrnchId>")
        text = "".join(parts)
        if len(self.agents) < 1000:
            self.agents[agent] = text
        return text

    def _code(self, value: str, what: str, max_len: int = 4) -> str:
        if not isinstance(value, str) or not re.fullmatch(rf"[A-Z0-9]{{1,{max_len}}}", value):
            raise ISO20022Error(f"{what} {value!r} is not an ISO 20022 code")
        return value


def _esc(value: str) -> str:
    """Escape text content. Values were checked by _Text, so no XML-illegal character is left."""
    if "&" in value or "<" in value or ">" in value:
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value


# ISO 13616 check: letters count as 10..35.
_IBAN_DIGITS = {ord(c): str(i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10)}


def _check_iban(iban: str, what: str) -> str:
    if not isinstance(iban, str) or not _IBAN.fullmatch(iban):
        raise ISO20022Error(f"{what}: {str(iban)[:40]!r} is not an IBAN (no spaces, capitals)")
    if int((iban[4:] + iban[:4]).upper().translate(_IBAN_DIGITS)) % 97 != 1:
        raise ISO20022Error(f"{what}: {iban!r} fails the IBAN check digits")
    return iban
