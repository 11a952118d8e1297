"""The run's correctness checks: each is a name, passed or not, and the values it compared."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bench.config import PROGRAM_ACCOUNT, TERMINAL
from bench.postgres import Db
from bench.state import RunState


@dataclass(frozen=True)
class Amounts:
    """The money figures of a run, read through the models: each Money or Amount column
    decodes itself (SQLite stores minor units or 1/10,000ths, PostgreSQL NUMERIC)."""

    ledger_sum: Decimal  # of every ledger entry at the bank: zero when it balances
    accounts_off_balance: int  # accounts whose book balance is not the sum of their entries
    bank_paid: Decimal  # of the bank's PAID payments
    book: Decimal  # the program accounts' book balances, summed
    bridge_reconciled: Decimal  # of the run's RECONCILED disbursements
    books: dict[str, Decimal]  # each program account's book balance
    reconciled_by_envelope: dict[str, Decimal]  # of each envelope's RECONCILED disbursements


def read_amounts(
    bridge_url: str, bank_url: str, envelope_ids: list[str], accounts: list[str] | None = None
) -> Amounts:
    from sqlalchemy import func, select

    from example_bank.db import make_engine as bank_engine
    from example_bank.models import Account, LedgerEntry, Payment
    from g2p_bridge.db import make_engine
    from g2p_bridge.models import Disbursement
    from g2p_bridge.models.enums import DisbursementState

    zero = Decimal(0)
    bank = bank_engine(bank_url)
    try:
        with bank.connect() as conn:
            ledger_sum = conn.scalar(select(func.sum(LedgerEntry.amount))) or zero
            per_account = (
                select(LedgerEntry.account_number, func.sum(LedgerEntry.amount).label("total"))
                .group_by(LedgerEntry.account_number)
                .subquery()
            )
            off = conn.scalar(
                select(func.count())
                .select_from(Account)
                .outerjoin(per_account, per_account.c.account_number == Account.account_number)
                .where(Account.book_balance != func.coalesce(per_account.c.total, 0))
            )
            paid = conn.scalar(
                select(func.sum(Payment.payment_amount)).where(Payment.state == "PAID")
            )
            books = {
                str(number): balance or zero
                for number, balance in conn.execute(
                    select(Account.account_number, Account.book_balance).where(
                        Account.account_number.in_(accounts or [PROGRAM_ACCOUNT])
                    )
                )
            }
    finally:
        bank.dispose()
    bridge = make_engine(bridge_url)
    try:
        with bridge.connect() as conn:
            by_envelope = {
                str(envelope): total or zero
                for envelope, total in conn.execute(
                    select(Disbursement.envelope_id, func.sum(Disbursement.amount))
                    .where(
                        Disbursement.envelope_id.in_(envelope_ids),
                        Disbursement.state == DisbursementState.RECONCILED,
                    )
                    .group_by(Disbursement.envelope_id)
                )
            }
    finally:
        bridge.dispose()
    return Amounts(
        ledger_sum,
        int(off or 0),
        paid or zero,
        sum(books.values(), zero),
        sum(by_envelope.values(), zero),
        books,
        by_envelope,
    )


class Checks(RunState):
    """After the run: the outcome against both databases."""

    def _checks(self) -> None:
        checks: dict[str, dict[str, Any]] = {}
        self.result["checks"] = checks

        def check(name: str, passed: bool, **values: Any) -> None:
            checks[name] = {"passed": bool(passed), **values}

        n = self.n_total
        where, ids = self._envelopes_where()
        pg = self.cfg.backend == "postgres"
        bridge, bank = Db(self.bridge_db_url), Db(self.bank_db_url)
        order = ' COLLATE "C"' if pg else ""
        try:
            check(
                "completed",
                self.result.get("reconciled_after_s") is not None,
                wait_error=self.result.get("wait_error"),
            )
            batch_states = {
                s: int(c)
                for s, c in bridge.rows(
                    f"SELECT state, count(*) FROM bank_batches WHERE {where} GROUP BY state",
                    *ids,
                )
            }
            check(
                "bank_batches_closed",
                not {"PENDING", "RUNNING"} & set(batch_states),
                bank_batches_by_state=batch_states,
            )
            by_state = {
                s: int(c)
                for s, c in bridge.rows(
                    f"SELECT state, count(*) FROM disbursements WHERE {where} GROUP BY state",
                    *ids,
                )
            }
            self.result["disbursements_by_state"] = by_state
            total = sum(by_state.values())
            check(
                "every_disbursement_terminal_once",
                total == n and all(s in TERMINAL for s in by_state),
                rows=total,
                expected=n,
                by_state=by_state,
            )
            no_reason = int(
                bridge.one(
                    f"SELECT count(*) FROM disbursements WHERE {where}"
                    " AND state IN ('FAILED', 'UNRESOLVED') AND state_reason IS NULL",
                    *ids,
                )
                or 0
            )
            check("failures_have_reasons", no_reason == 0, without_reason=no_reason)
            exp = self.expected
            rejected = exp.get("rejected", 0)
            failed_rows = by_state.get("FAILED", 0) + by_state.get("UNRESOLVED", 0)
            check(
                "expected_outcome",
                by_state.get("REVERSED", 0) == exp["reversed"]
                and failed_rows == exp["unresolved"] + rejected
                and by_state.get("RECONCILED", 0)
                == n - exp["reversed"] - exp["unresolved"] - rejected,
                reversed=by_state.get("REVERSED", 0),
                expected_reversed=exp["reversed"],
                failed_or_unresolved=failed_rows,
                expected_unresolved=exp["unresolved"],
                expected_rejected_by_bank=rejected,
                reversed_share=round(by_state.get("REVERSED", 0) / n, 4),
            )
            counters = self._counters(bridge)
            shipped_rows = int(
                bridge.one(
                    f"SELECT count(*) FROM disbursements WHERE {where} AND shipped_at IS NOT NULL",
                    *ids,
                )
                or 0
            )
            rows = {
                "received": total - by_state.get("CANCELLED", 0),
                "shipped": shipped_rows,
                "reconciled": by_state.get("RECONCILED", 0) + by_state.get("REVERSED", 0),
                "reversed": by_state.get("REVERSED", 0),
                "failed": failed_rows,
                "cancelled": by_state.get("CANCELLED", 0),
            }
            check("counters_equal_rows", counters == rows, counters=counters, rows=rows)

            # One bank payment per shipped disbursement, none extra, none twice; but none for a
            # payment the bank rejected in its status report (FAILED after shipping, file
            # channel only: expected_outcome's "rejected").
            paid_at_bank = "shipped_at IS NOT NULL" + (" AND state <> 'FAILED'" if rejected else "")
            shipped_ids = bridge.stream(
                f"SELECT id FROM disbursements WHERE {where} AND {paid_at_bank} ORDER BY id{order}",
                *ids,
            )
            sent_to_bank = int(
                bridge.one(
                    f"SELECT count(*) FROM disbursements WHERE {where} AND {paid_at_bank}", *ids
                )
                or 0
            )
            payment_refs = bank.stream(
                "SELECT payment_reference_number FROM payments"
                f" ORDER BY payment_reference_number{order}"
            )
            missing, extra, duplicates, payments = merge_compare(shipped_ids, payment_refs)
            check(
                "one_bank_payment_per_shipped_disbursement",
                missing == 0 and extra == 0 and duplicates == 0 and payments == sent_to_bank,
                shipped=shipped_rows,
                rejected_by_bank=shipped_rows - sent_to_bank,
                bank_payments=payments,
                missing_at_bank=missing,
                extra_at_bank=extra,
                duplicate_payments=duplicates,
            )
            bank_states = {
                s: int(c)
                for s, c in bank.rows("SELECT state, count(*) FROM payments GROUP BY state")
            }
            check(
                "bank_outcomes_match_bridge",
                bank_states.get("PAID", 0) == by_state.get("RECONCILED", 0)
                and bank_states.get("FAILED", 0) == by_state.get("REVERSED", 0)
                and sum(bank_states.values())
                == bank_states.get("PAID", 0) + bank_states.get("FAILED", 0),
                bank_payments_by_state=bank_states,
            )
            accounts = sorted({e.account for e in self.plan})
            money = read_amounts(self.bridge_db_url, self.bank_db_url, ids, accounts)
            entries = int(bank.one("SELECT count(*) FROM ledger_entries") or 0)
            check(
                "ledger_balanced",
                money.ledger_sum == 0 and money.accounts_off_balance == 0,
                sum_of_entries=str(money.ledger_sum),
                ledger_entries=entries,
                accounts_off_balance=money.accounts_off_balance,
            )
            paid_sum, book, reconciled_sum = money.bank_paid, money.book, money.bridge_reconciled
            check(
                "program_account_debited_exactly",
                book == self.deposit - paid_sum and paid_sum == reconciled_sum,
                deposit=str(self.deposit),
                book_balance=str(book),
                bank_paid=str(paid_sum),
                bridge_reconciled=str(reconciled_sum),
            )
            if len(self.plan) > 1:
                # Each program's account paid for its own envelopes and nobody else's.
                deposits = self.deposits
                owed = dict.fromkeys(accounts, Decimal(0))
                for envelope, planned in zip(ids, self.plan, strict=True):
                    owed[planned.account] += money.reconciled_by_envelope.get(envelope, Decimal(0))
                debited = {
                    a: deposits.get(a, Decimal(0)) - money.books.get(a, Decimal(0))
                    for a in accounts
                }
                check(
                    "each_program_account_debited_for_its_own_envelopes",
                    debited == owed and len(money.books) == len(accounts),
                    debited={a: str(v) for a, v in debited.items()},
                    reconciled={a: str(v) for a, v in owed.items()},
                )
            recon_errors = int(bridge.one("SELECT count(*) FROM recon_errors") or 0)
            statements = {
                s: int(c)
                for s, c in bridge.rows(
                    "SELECT state, count(*) FROM account_statements GROUP BY state"
                )
            }
            check(
                "statements_reconciled_cleanly",
                recon_errors == 0 and set(statements) <= {"PROCESSED"},
                recon_errors=recon_errors,
                statements_by_state=statements,
            )
            bank_statements = {
                s: int(c)
                for s, c in bank.rows(
                    "SELECT delivery_state, count(*) FROM statements GROUP BY delivery_state"
                )
            }
            self.result["bank_statements_by_delivery_state"] = bank_statements
            batches = bridge.rows(
                "SELECT count(*), coalesce(sum(attempts), 0), coalesce(max(attempts), 0),"
                " count(*) FILTER (WHERE bank_response LIKE %s) FROM bank_batches"
                f" WHERE {where}",
                "%already known%",
                *ids,
            )[0]
            bank_batches = int(bank.one("SELECT count(*) FROM payment_batches") or 0)
            self.result["batches"] = {
                "bridge_bank_batches": int(batches[0]),
                "bridge_bank_batch_attempts": int(batches[1]),
                "bridge_max_attempts_of_a_batch": int(batches[2]),
                # Re-sent after an answer the bridge never heard; the bank knew the payments.
                "bridge_batches_answered_with_duplicates": int(batches[3]),
                "bank_payment_batches": bank_batches,
                "funds_block_attempts": int(
                    bridge.one(
                        f"SELECT sum(funds_blocked_attempts) FROM envelope_status WHERE {where}",
                        *ids,
                    )
                    or 0
                ),
            }
        finally:
            bridge.close()
            bank.close()


def merge_compare(left: Iterator[str], right: Iterator[str]) -> tuple[int, int, int, int]:
    """Compare two sorted id streams: (missing on the right, extra on the right, duplicates on
    the right, rows on the right)."""
    missing = extra = duplicates = count = 0
    sentinel = object()
    a: Any = next(left, sentinel)
    b: Any = next(right, sentinel)
    previous: Any = None
    while a is not sentinel or b is not sentinel:
        if b is not sentinel and b == previous:
            duplicates += 1
            count += 1
            b = next(right, sentinel)
            continue
        if b is sentinel or (a is not sentinel and a < b):
            missing += 1
            a = next(left, sentinel)
        elif a is sentinel or b < a:
            extra += 1
            count += 1
            previous = b
            b = next(right, sentinel)
        else:
            count += 1
            previous = b
            a, b = next(left, sentinel), next(right, sentinel)
    return missing, extra, duplicates, count
