"""The reconciliation decision: what a chunk of statement entries does to disbursements.

A pure function of the entries (in a neutral form, whatever file format they came from), of
what is known about the disbursements they name, and of what the columns can hold. It returns
a frozen :class:`ChunkOutcome`; ``core/statements.py`` loads the facts before it and writes the
outcome after it. Every reconciliation rule lives here, once, for MT940 and camt alike:

* credits (and RC, EC/ED) are counted, never applied;
* a value longer than its column, or an amount with more digits than can be stored, is a
  FIELD_TOO_LONG error (what does not fit is left off the error row);
* an account or entry in another currency than the program account's: CURRENCY_MISMATCH;
* an id no disbursement has: INVALID_DISBURSEMENT_ID; one of another program: WRONG_ACCOUNT;
  another amount: AMOUNT_MISMATCH;
* a debit (D) of a disbursement already remitted: DUPLICATE_DISBURSEMENT; of one never sent to
  the bank: DISBURSEMENT_NOT_SHIPPED; else it is RECONCILED, a FAILED one's failure is taken
  back out of the counters, and one whose shipment was never recorded is proven shipped;
* a reversal (RD) without a remittance on record: INVALID_REVERSAL; a second one:
  DUPLICATE_REVERSAL; else it is REVERSED with the bank's reason.

Entries are applied in order, each seeing what the earlier ones of the chunk did, so a debit and
its reversal in one statement reconcile and then reverse the disbursement.

Nothing here imports SQLAlchemy or the models: it runs, and is tested, without a database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, localcontext
from typing import Literal

from g2p_bridge.core.errors import ErrorCode

__all__ = [
    "REMITTABLE_STATES",
    "BankEntry",
    "ChunkOutcome",
    "ColumnLimits",
    "CounterDelta",
    "EntryError",
    "KnownDisbursement",
    "Mark",
    "PageFacts",
    "ProgramAccount",
    "ReconWrite",
    "Remittance",
    "Reversal",
    "StateChange",
    "currency_problem",
    "decide",
    "ids_to_load",
    "too_long",
]

Mark = Literal["D", "RD", "C"]

# Disbursement states by name (models.enums.DisbursementState has the same values; importing
# it would import the models). tests/core/test_reconciliation.py checks that they agree.
RECONCILED = "RECONCILED"
REVERSED = "REVERSED"
FAILED = "FAILED"
# A remittance may be found for money whose sending we have not yet recorded as done: the bank
# paid it before our commit (a crash, or a slow answer), or said it refused a batch it paid.
REMITTABLE_STATES = frozenset({"DISPATCHING", "SHIPPED", FAILED})


@dataclass(frozen=True, slots=True)
class ColumnLimits:
    """What the columns the outcome goes into can hold; the caller reads them from the column
    types, so the checks cannot drift from the schema."""

    disbursement_id: int
    bank_reference: int
    beneficiary_name: int
    amount_precision: int
    amount_scale: int

    def amount_fits(self, value: Decimal) -> bool:
        """Whether an amount can be stored exactly (NUMERIC(p, s) on PostgreSQL, an integer of
        1/10^s units on SQLite)."""
        if not value.is_finite():
            return False
        _, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int):  # "n", "N" or "F": not finite, handled above
            return False
        if exponent >= -self.amount_scale:
            # The common case, without arithmetic: count the digits before the decimal point.
            return len(digits) + exponent <= self.amount_precision - self.amount_scale
        with localcontext() as ctx:
            ctx.prec = 200  # exact for any amount a parser accepts ("1.500000" fits)
            scaled = value.scaleb(self.amount_scale)
            return scaled == scaled.to_integral_value() and abs(scaled) < Decimal(10) ** (
                self.amount_precision
            )


@dataclass(frozen=True, slots=True)
class BankEntry:
    """One statement entry as the bank connector read it, in no file format's terms.

    ``mark``: "D" a payment left the account, "RD" the bank reversed or returned one, "C"
    anything else (credits, RC, expected items): counted, never applied. ``currency`` is None
    when the entry is in its page's currency by construction (MT940)."""

    sequence: int
    mark: Mark
    amount: Decimal
    disbursement_id: str | None
    currency: str | None = None
    bank_reference: str | None = None
    entry_date: date | None = None
    value_date: date | None = None
    reversal_reason: str | None = None
    beneficiary_name: str | None = None


@dataclass(frozen=True, slots=True)
class PageFacts:
    """The statement page the entries are on. ``currencies``: those its balances and account
    are in (empty when it states none, as a camt.054 may)."""

    statement_id: str
    reference: str
    statement_number: str
    sequence_number: str | None
    currencies: frozenset[str]


@dataclass(frozen=True, slots=True)
class ProgramAccount:
    """The program the page's account pays."""

    mnemonic: str
    account_number: str
    currency: str


@dataclass(frozen=True, slots=True)
class KnownDisbursement:
    """What is on record for one disbursement an entry names, read (and locked) before."""

    id: str
    envelope_id: str
    program_mnemonic: str
    amount: Decimal
    state: str
    bank_batch_id: str | None
    shipped: bool  # its shipped_at is set
    has_recon: bool  # a reconciliation record is stored
    remitted: bool  # that record holds a remittance
    reversed: bool  # and a reversal


@dataclass(frozen=True, slots=True)
class Remittance:
    statement_id: str
    statement_number: str
    statement_sequence: str | None
    entry_sequence: int
    entry_date: date | None
    value_date: date | None
    amount: Decimal
    bank_reference: str | None
    beneficiary_name: str | None
    bank_batch_id: str | None


@dataclass(frozen=True, slots=True)
class Reversal:
    statement_id: str
    statement_number: str
    statement_sequence: str | None
    entry_sequence: int
    entry_date: date | None
    value_date: date | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class ReconWrite:
    """A reconciliation record to insert (``is_new``) or to update with what this chunk found:
    a remittance, a reversal, or both."""

    disbursement_id: str
    envelope_id: str
    is_new: bool
    amount: Decimal  # the disbursement's, which a remittance and a reversal move
    remittance: Remittance | None = None
    reversal: Reversal | None = None


@dataclass(frozen=True, slots=True)
class EntryError:
    """An entry that could not be applied; the fields that do not fit their columns are None
    (the detail says what they were)."""

    sequence: int
    entry_date: date | None
    value_date: date | None
    code: ErrorCode
    detail: str
    disbursement_id: str | None
    bank_reference: str | None
    amount: Decimal | None


@dataclass(frozen=True, slots=True)
class StateChange:
    disbursement_id: str
    state: str
    reason: str | None = None  # the bank's reversal reason


@dataclass(frozen=True, slots=True)
class CounterDelta:
    envelope_id: str
    counter: str  # an EnvelopeStatus counter column
    delta: int


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    recons: tuple[ReconWrite, ...] = ()
    errors: tuple[EntryError, ...] = ()
    state_changes: tuple[StateChange, ...] = ()
    # Remitted disbursements whose shipment was never recorded, by envelope: the remittance
    # proves the bank holds the payment. shipped_count moves by what the (guarded) write finds.
    proven_shipped: tuple[tuple[str, str], ...] = ()
    counters: tuple[CounterDelta, ...] = ()
    total: int = 0
    matched: int = 0
    reversed: int = 0

    @property
    def unmatched(self) -> int:
        return len(self.errors)


def too_long(what: str, value: str, limit: int) -> str:
    return f"{what} is {len(value)} characters, at most {limit} can be stored: {value[:40]!r}..."


def currency_problem(page: PageFacts, account: ProgramAccount) -> str | None:
    """Why none of a page's money is this account's, or None. Money in another currency is not
    this account's movement of the disbursement's amount, whatever its figure."""
    if not page.currencies or page.currencies == {account.currency}:
        return None
    return (
        f"statement {page.reference[:40]!r} is in {'/'.join(sorted(page.currencies))}; "
        f"account {account.account_number} of program {account.mnemonic} is in "
        f"{account.currency}"
    )


def ids_to_load(
    page: PageFacts,
    entries: Iterable[BankEntry],
    account: ProgramAccount,
    limits: ColumnLimits,
) -> list[str]:
    """The disbursements to read (and lock) before :func:`decide`, sorted: those a debit or
    reversal names that could match. An id longer than any stored one cannot, and nothing of a
    page in another currency is applied, so neither is read."""
    if currency_problem(page, account) is not None:
        return []
    return sorted(
        {
            e.disbursement_id
            for e in entries
            if e.mark != "C"
            and e.disbursement_id
            and len(e.disbursement_id) <= limits.disbursement_id
        }
    )


@dataclass(slots=True)
class _Working:
    """One disbursement while the chunk is decided: what the earlier entries did to it."""

    known: KnownDisbursement
    state: str
    remitted: bool
    reversed: bool
    remittance: Remittance | None = None
    reversal: Reversal | None = None


@dataclass(slots=True)
class _Decision:
    errors: list[EntryError] = field(default_factory=list)
    state_changes: dict[str, StateChange] = field(default_factory=dict)
    proven_shipped: list[tuple[str, str]] = field(default_factory=list)
    counters: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    matched: int = 0
    reversed: int = 0

    def error(
        self,
        entry: BankEntry,
        code: ErrorCode,
        detail: str,
        disbursement_id: str | None,
        keep_id: bool = True,
        keep_reference: bool = True,
        keep_amount: bool = True,
    ) -> None:
        self.errors.append(
            EntryError(
                sequence=entry.sequence,
                entry_date=entry.entry_date,
                value_date=entry.value_date,
                code=code,
                detail=detail,
                disbursement_id=disbursement_id if keep_id else None,
                bank_reference=entry.bank_reference if keep_reference else None,
                amount=entry.amount if keep_amount else None,
            )
        )


def _unstorable(entry: BankEntry, limits: ColumnLimits, decision: _Decision) -> bool:
    """Records FIELD_TOO_LONG for an entry whose id, bank reference or amount cannot be stored
    (the beneficiary name is checked where a debit uses it). True when it did."""
    did, reference = entry.disbursement_id, entry.bank_reference
    id_ok = did is None or len(did) <= limits.disbursement_id
    reference_ok = reference is None or len(reference) <= limits.bank_reference
    amount_ok = limits.amount_fits(entry.amount)
    if did is not None and not id_ok:
        detail = too_long("the disbursement id", did, limits.disbursement_id)
    elif reference is not None and not reference_ok:
        detail = too_long("the bank reference", reference, limits.bank_reference)
    elif not amount_ok:
        detail = f"the amount {str(entry.amount)[:40]} has more digits than can be stored"
    else:
        return False
    decision.error(entry, ErrorCode.FIELD_TOO_LONG, detail, did, id_ok, reference_ok, amount_ok)
    return True


def decide(
    page: PageFacts,
    entries: Sequence[BankEntry],
    known: Mapping[str, KnownDisbursement],
    account: ProgramAccount,
    limits: ColumnLimits,
) -> ChunkOutcome:
    """What ``entries`` of ``page`` (of ``account``) do, given what is ``known`` of the
    disbursements they name (keyed by id; an id missing from it is unknown)."""
    decision = _Decision()
    working: dict[str, _Working] = {}
    page_currency = currency_problem(page, account)
    for entry in entries:
        if entry.mark == "C":
            continue  # credits (deposits, returns of others' money) are not disbursements
        if _unstorable(entry, limits, decision):
            continue
        did = entry.disbursement_id
        if page_currency is not None:
            decision.error(entry, ErrorCode.CURRENCY_MISMATCH, page_currency, did)
            continue
        if entry.currency is not None and entry.currency != account.currency:
            detail = (
                f"entry {entry.sequence} is in {entry.currency[:3]}; account "
                f"{account.account_number} of program {account.mnemonic} is in {account.currency}"
            )
            decision.error(entry, ErrorCode.CURRENCY_MISMATCH, detail, did)
            continue
        facts = known.get(did or "")
        if facts is None:
            detail = f"no disbursement {did!r}"
            decision.error(entry, ErrorCode.INVALID_DISBURSEMENT_ID, detail, did)
            continue
        if facts.program_mnemonic != account.mnemonic:
            detail = (
                f"disbursement belongs to program {facts.program_mnemonic}, not to this account's"
            )
            decision.error(entry, ErrorCode.WRONG_ACCOUNT, detail, facts.id)
            continue
        if entry.amount != facts.amount:
            detail = f"entry amount {entry.amount} != disbursement amount {facts.amount}"
            decision.error(entry, ErrorCode.AMOUNT_MISMATCH, detail, facts.id)
            continue
        item = working.get(facts.id)
        if item is None:
            item = working[facts.id] = _Working(facts, facts.state, facts.remitted, facts.reversed)
        if entry.mark == "D":
            _remit(page, entry, item, limits, decision)
        else:
            _reverse(page, entry, item, decision)
    recons = tuple(
        ReconWrite(
            disbursement_id=item.known.id,
            envelope_id=item.known.envelope_id,
            is_new=not item.known.has_recon,
            amount=item.known.amount,
            remittance=item.remittance,
            reversal=item.reversal,
        )
        for item in working.values()
        if item.remittance is not None or item.reversal is not None
    )
    return ChunkOutcome(
        recons=recons,
        errors=tuple(decision.errors),
        state_changes=tuple(decision.state_changes.values()),
        proven_shipped=tuple(decision.proven_shipped),
        counters=tuple(
            CounterDelta(envelope, counter, delta)
            for (envelope, counter), delta in decision.counters.items()
        ),
        total=len(entries),
        matched=decision.matched,
        reversed=decision.reversed,
    )


def _remit(
    page: PageFacts, entry: BankEntry, item: _Working, limits: ColumnLimits, decision: _Decision
) -> None:
    facts = item.known
    if item.remitted:
        detail = "remittance already recorded for this disbursement"
        decision.error(entry, ErrorCode.DUPLICATE_DISBURSEMENT, detail, facts.id)
        return
    if item.state not in REMITTABLE_STATES:
        detail = f"disbursement is {item.state}; it was never sent to the bank"
        decision.error(entry, ErrorCode.DISBURSEMENT_NOT_SHIPPED, detail, facts.id)
        return
    name = entry.beneficiary_name
    if name is not None and len(name) > limits.beneficiary_name:
        detail = too_long("the beneficiary name", name, limits.beneficiary_name)
        decision.error(entry, ErrorCode.FIELD_TOO_LONG, detail, facts.id)
        return
    item.remitted = True
    item.remittance = Remittance(
        statement_id=page.statement_id,
        statement_number=page.statement_number,
        statement_sequence=page.sequence_number,
        entry_sequence=entry.sequence,
        entry_date=entry.entry_date,
        value_date=entry.value_date,
        amount=entry.amount,
        bank_reference=entry.bank_reference,
        beneficiary_name=name,
        bank_batch_id=facts.bank_batch_id,
    )
    decision.state_changes[facts.id] = StateChange(facts.id, RECONCILED)
    if not facts.shipped:
        decision.proven_shipped.append((facts.envelope_id, facts.id))
    decision.counters[facts.envelope_id, "reconciled_count"] += 1
    if item.state == FAILED:
        decision.counters[facts.envelope_id, "failed_count"] -= 1
    item.state = RECONCILED
    decision.matched += 1


def _reverse(page: PageFacts, entry: BankEntry, item: _Working, decision: _Decision) -> None:
    facts = item.known
    if not item.remitted:
        detail = "reversal of a disbursement with no remittance on record"
        decision.error(entry, ErrorCode.INVALID_REVERSAL, detail, facts.id)
        return
    if item.reversed:
        detail = "reversal already recorded for this disbursement"
        decision.error(entry, ErrorCode.DUPLICATE_REVERSAL, detail, facts.id)
        return
    item.reversed = True
    item.reversal = Reversal(
        statement_id=page.statement_id,
        statement_number=page.statement_number,
        statement_sequence=page.sequence_number,
        entry_sequence=entry.sequence,
        entry_date=entry.entry_date,
        value_date=entry.value_date,
        reason=entry.reversal_reason,
    )
    decision.state_changes[facts.id] = StateChange(facts.id, REVERSED, entry.reversal_reason)
    decision.counters[facts.envelope_id, "reversed_count"] += 1
    item.state = REVERSED
    decision.reversed += 1
