"""The reconciliation decision, table-driven and without a database: each rule alone, then
entries that meet within one chunk."""

from __future__ import annotations

import ast
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from g2p_bridge.core import reconciliation
from g2p_bridge.core.errors import ErrorCode
from g2p_bridge.core.reconciliation import (
    BankEntry,
    ChunkOutcome,
    ColumnLimits,
    CounterDelta,
    KnownDisbursement,
    PageFacts,
    ProgramAccount,
    StateChange,
    decide,
    ids_to_load,
)

TEN = Decimal("10.00")
DAY = date(2026, 12, 1)
LIMITS = ColumnLimits(
    disbursement_id=64, bank_reference=64, beneficiary_name=256, amount_precision=22, amount_scale=4
)
ACCOUNT = ProgramAccount("PROG1", "1000000001", "USD")
PAGE = PageFacts("st-1", "TEST000001", "7", "1", frozenset({"USD"}))


def known(
    id: str = "d-1",
    state: str = "SHIPPED",
    *,
    program: str = "PROG1",
    amount: Decimal = TEN,
    shipped: bool = True,
    has_recon: bool = False,
    remitted: bool = False,
    reversed: bool = False,
) -> KnownDisbursement:
    return KnownDisbursement(
        id=id,
        envelope_id="env-1",
        program_mnemonic=program,
        amount=amount,
        state=state,
        bank_batch_id="batch-1",
        shipped=shipped,
        has_recon=has_recon or remitted,
        remitted=remitted,
        reversed=reversed,
    )


def entry(
    mark: str = "D", id: str | None = "d-1", amount: Decimal = TEN, **kw: object
) -> BankEntry:
    defaults: dict[str, object] = {
        "sequence": 1,
        "bank_reference": "B1",
        "entry_date": DAY,
        "value_date": DAY,
    }
    defaults.update(kw)
    return BankEntry(mark=mark, amount=amount, disbursement_id=id, **defaults)  # type: ignore[arg-type]


def run(
    entries: list[BankEntry], *facts: KnownDisbursement, page: PageFacts = PAGE
) -> ChunkOutcome:
    numbered = [replace(e, sequence=i) for i, e in enumerate(entries, 1)]
    return decide(page, numbered, {f.id: f for f in facts}, ACCOUNT, LIMITS)


@dataclass(frozen=True)
class Case:
    name: str
    entries: list[BankEntry]
    facts: tuple[KnownDisbursement, ...]
    errors: list[ErrorCode]
    states: dict[str, str]
    counters: dict[str, int]
    page: PageFacts = PAGE


CASES = [
    Case("debit reconciles", [entry()], (known(),), [], {"d-1": "RECONCILED"},
         {"reconciled_count": 1}),
    Case("credit is counted, not applied", [entry("C", "d-1")], (known(),), [], {}, {}),
    Case("unknown id", [entry(id="nope")], (), [ErrorCode.INVALID_DISBURSEMENT_ID], {}, {}),
    Case("no id at all", [entry(id=None)], (), [ErrorCode.INVALID_DISBURSEMENT_ID], {}, {}),
    Case("another program's disbursement", [entry()], (known(program="PROG2"),),
         [ErrorCode.WRONG_ACCOUNT], {}, {}),
    Case("amount mismatch", [entry(amount=Decimal("9.99"))], (known(),),
         [ErrorCode.AMOUNT_MISMATCH], {}, {}),
    Case("same amount, other exponent", [entry(amount=Decimal("10"))], (known(),), [],
         {"d-1": "RECONCILED"}, {"reconciled_count": 1}),
    Case("page in another currency", [entry(), entry("RD")], (known(),),
         [ErrorCode.CURRENCY_MISMATCH] * 2, {}, {},
         replace(PAGE, currencies=frozenset({"EUR"}))),
    Case("entry in another currency", [entry(currency="EUR")], (known(),),
         [ErrorCode.CURRENCY_MISMATCH], {}, {}),
    Case("page without balances, entry in the account's currency", [entry(currency="USD")],
         (known(),), [], {"d-1": "RECONCILED"}, {"reconciled_count": 1},
         replace(PAGE, currencies=frozenset())),
    Case("id too long", [entry(id="X" * 65)], (), [ErrorCode.FIELD_TOO_LONG], {}, {}),
    Case("bank reference too long", [entry(bank_reference="B" * 65)], (known(),),
         [ErrorCode.FIELD_TOO_LONG], {}, {}),
    Case("amount with too many digits", [entry(amount=Decimal("1" * 19))], (known(),),
         [ErrorCode.FIELD_TOO_LONG], {}, {}),
    Case("amount with too many decimals", [entry(amount=Decimal("10.00001"))], (known(),),
         [ErrorCode.FIELD_TOO_LONG], {}, {}),
    Case("beneficiary name too long", [entry(beneficiary_name="N" * 257)], (known(),),
         [ErrorCode.FIELD_TOO_LONG], {}, {}),
    Case("duplicate remittance", [entry()], (known(remitted=True, state="RECONCILED"),),
         [ErrorCode.DUPLICATE_DISBURSEMENT], {}, {}),
    Case("not shipped", [entry()], (known(state="BATCHED", shipped=False),),
         [ErrorCode.DISBURSEMENT_NOT_SHIPPED], {}, {}),
    Case("dispatching: the bank paid before we recorded it", [entry()],
         (known(state="DISPATCHING", shipped=False),), [], {"d-1": "RECONCILED"},
         {"reconciled_count": 1}),
    Case("failed, but the bank paid: the failure is taken back", [entry()],
         (known(state="FAILED"),), [], {"d-1": "RECONCILED"},
         {"reconciled_count": 1, "failed_count": -1}),
    Case("reversal without remittance", [entry("RD")], (known(),),
         [ErrorCode.INVALID_REVERSAL], {}, {}),
    Case("reversal of a stored remittance", [entry("RD", reversal_reason="AC04")],
         (known(state="RECONCILED", remitted=True),), [], {"d-1": "REVERSED"},
         {"reversed_count": 1}),
    Case("duplicate reversal", [entry("RD")],
         (known(state="REVERSED", remitted=True, reversed=True),),
         [ErrorCode.DUPLICATE_REVERSAL], {}, {}),
    Case("a debit and its reversal in one statement", [entry(), entry("RD", reversal_reason="x")],
         (known(),), [], {"d-1": "REVERSED"}, {"reconciled_count": 1, "reversed_count": 1}),
    Case("a reversal before its debit in one statement", [entry("RD"), entry()], (known(),),
         [ErrorCode.INVALID_REVERSAL], {"d-1": "RECONCILED"}, {"reconciled_count": 1}),
    Case("two debits of one id", [entry(), entry()], (known(),),
         [ErrorCode.DUPLICATE_DISBURSEMENT], {"d-1": "RECONCILED"}, {"reconciled_count": 1}),
    Case("debit, reversal, reversal, debit", [entry(), entry("RD"), entry("RD"), entry()],
         (known(),), [ErrorCode.DUPLICATE_REVERSAL, ErrorCode.DUPLICATE_DISBURSEMENT],
         {"d-1": "REVERSED"}, {"reconciled_count": 1, "reversed_count": 1}),
    Case("two disbursements, one unknown, one wrong amount",
         [entry(id="d-1"), entry(id="d-2", amount=Decimal(1)), entry(id="d-3")],
         (known("d-1"), known("d-2")),
         [ErrorCode.AMOUNT_MISMATCH, ErrorCode.INVALID_DISBURSEMENT_ID],
         {"d-1": "RECONCILED"}, {"reconciled_count": 1}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rules(case: Case) -> None:
    outcome = run(case.entries, *case.facts, page=case.page)
    assert [e.code for e in outcome.errors] == case.errors
    assert {c.disbursement_id: c.state for c in outcome.state_changes} == case.states
    assert {c.counter: c.delta for c in outcome.counters} == case.counters
    assert outcome.total == len(case.entries)
    assert outcome.unmatched == len(case.errors)
    assert outcome.matched == case.counters.get("reconciled_count", 0)
    assert outcome.reversed == case.counters.get("reversed_count", 0)
    assert all(c.envelope_id == "env-1" for c in outcome.counters)


def test_a_debit_writes_a_new_record_with_the_remittance() -> None:
    outcome = run([entry(beneficiary_name="Amina", bank_reference="REF-9")], known())
    (write,) = outcome.recons
    assert write.is_new and write.reversal is None and write.remittance is not None
    paid = write.remittance
    assert (paid.statement_id, paid.statement_number, paid.statement_sequence) == ("st-1", "7", "1")
    assert (paid.entry_sequence, paid.amount, paid.bank_reference) == (1, TEN, "REF-9")
    assert (paid.beneficiary_name, paid.bank_batch_id, paid.value_date) == ("Amina", "batch-1", DAY)
    assert outcome.proven_shipped == ()


def test_a_debit_and_its_reversal_make_one_new_record_with_both() -> None:
    outcome = run([entry(), entry("RD", reversal_reason="AC04 Account closed")], known())
    (write,) = outcome.recons
    assert write.is_new and write.remittance is not None and write.reversal is not None
    assert write.reversal.reason == "AC04 Account closed" and write.reversal.entry_sequence == 2
    assert outcome.state_changes == (StateChange("d-1", "REVERSED", "AC04 Account closed"),)


def test_a_reversal_of_a_stored_remittance_updates_the_record() -> None:
    outcome = run([entry("RD", reversal_reason="AC04")], known(remitted=True, state="RECONCILED"))
    (write,) = outcome.recons
    assert not write.is_new and write.remittance is None and write.reversal is not None


def test_a_stored_record_without_remittance_gets_it_by_update() -> None:
    outcome = run([entry()], known(has_recon=True))
    (write,) = outcome.recons
    assert not write.is_new and write.remittance is not None


def test_a_remittance_proves_a_shipment_never_recorded() -> None:
    outcome = run([entry()], known(state="DISPATCHING", shipped=False))
    assert outcome.proven_shipped == (("env-1", "d-1"),)
    # Counted by the write, which only counts a shipment no one else recorded meanwhile.
    assert "shipped_count" not in {c.counter for c in outcome.counters}


def test_what_does_not_fit_is_left_off_the_error_row() -> None:
    outcome = run(
        [
            entry(id="X" * 70, bank_reference="B" * 70, amount=Decimal("1" * 30)),
            entry(bank_reference="B" * 70),
            entry(amount=Decimal("1" * 30)),
        ],
        known(),
    )
    first, second, third = outcome.errors
    assert (first.disbursement_id, first.bank_reference, first.amount) == (None, None, None)
    assert "disbursement id is 70 characters" in first.detail
    assert (second.disbursement_id, second.bank_reference, second.amount) == ("d-1", None, TEN)
    assert third.amount is None and "more digits" in third.detail
    assert outcome.recons == () and outcome.state_changes == ()


def test_counters_sum_per_envelope() -> None:
    facts = [known("d-1"), replace(known("d-2", state="FAILED"), envelope_id="env-2")]
    outcome = run([entry(id="d-1"), entry(id="d-2")], *facts)
    assert sorted(outcome.counters, key=lambda c: (c.envelope_id, c.counter)) == [
        CounterDelta("env-1", "reconciled_count", 1),
        CounterDelta("env-2", "failed_count", -1),
        CounterDelta("env-2", "reconciled_count", 1),
    ]


def test_the_ids_to_load_are_those_that_could_match() -> None:
    entries = [entry(id="b"), entry("RD", id="a"), entry("C", id="c"), entry(id="X" * 65)]
    assert ids_to_load(PAGE, entries, ACCOUNT, LIMITS) == ["a", "b"]
    foreign = replace(PAGE, currencies=frozenset({"EUR", "USD"}))
    assert ids_to_load(foreign, entries, ACCOUNT, LIMITS) == []


def test_the_decision_does_not_change_its_inputs() -> None:
    facts = known()
    entries = [entry(), entry("RD")]
    first = run(entries, facts)
    assert run(entries, facts) == first
    assert facts == known()


def test_state_names_match_the_models() -> None:
    from g2p_bridge.models.enums import DisbursementState

    assert {
        DisbursementState.DISPATCHING,
        DisbursementState.SHIPPED,
        DisbursementState.FAILED,
    } == reconciliation.REMITTABLE_STATES
    assert (reconciliation.RECONCILED, reconciliation.REVERSED) == (
        DisbursementState.RECONCILED,
        DisbursementState.REVERSED,
    )


def test_the_core_imports_no_database_code() -> None:
    tree = ast.parse(Path(reconciliation.__file__).read_text())
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not {
        m for m in imported if m.startswith(("sqlalchemy", "g2p_bridge.models", "g2p_bridge.db"))
    }
