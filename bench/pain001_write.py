"""Time and peak memory of writing one large pain.001, once: `python -m bench.pain001_write`.

Not a test: the figures depend on the machine (docs/banks.md records them). The transactions are
generated lazily, as the dispatcher would stream them from the database, and the time to
generate them alone is measured and reported separately.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

from g2p_bridge.formats.iso20022 import (
    PAIN001_VERSIONS,
    CreditTransfer,
    FinancialInstitution,
    IbanAccount,
    MobileWallet,
    OtherAccount,
    Pain001Profile,
    PaymentBatch,
    write_pain001_file,
)

_AGENTS = (
    FinancialInstitution(other_id="MPESA"),
    FinancialInstitution(member_id="01", branch_id="BR01"),
    FinancialInstitution(bic="COBADEFFXXX"),
)


def transactions(count: int) -> Iterator[CreditTransfer]:
    """A third each of mobile wallets, local accounts and IBANs, with non-Latin names."""
    for i in range(count):
        kind = i % 3
        account: MobileWallet | OtherAccount | IbanAccount
        if kind == 0:
            account = MobileWallet(f"+2547{i:08d}")
        elif kind == 1:
            account = OtherAccount(f"{i:010d}")
        else:
            account = IbanAccount("DE89370400440532013000")
        yield CreditTransfer(
            f"disb-{i:012d}", Decimal("100.25"), "KES", f"Амина Ҳасан {i}", account, _AGENTS[kind],
            "December transfer, cycle 2026-12",
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    count = args.count

    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in transactions(count):
        pass
    generation = time.perf_counter() - started
    generation_cpu = time.process_time() - cpu_started

    for version in PAIN001_VERSIONS:
        batch = PaymentBatch(
            message_id="batch-bench", created_at=datetime.now(UTC), initiating_party="Ministry",
            debtor_name="Ministry", debtor_account=OtherAccount("1000000001"),
            debtor_agent=FinancialInstitution(bic="NRTHKENA"),
            requested_execution_date=date.today(), currency="KES",
            number_of_transactions=count, control_sum=Decimal("100.25") * count,
            funds_block_reference="block-bench",
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "batch.xml")
            started, cpu_started = time.perf_counter(), time.process_time()
            write_pain001_file(path, batch, transactions(count), Pain001Profile(version=version))
            elapsed = time.perf_counter() - started
            # CPU time as well: on a shared machine the wall time mostly measures the neighbours.
            cpu = time.process_time() - cpu_started
            size = os.path.getsize(path)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{version}: {count} transactions in {elapsed:.2f} s wall, {cpu:.2f} s CPU "
            f"(generating the input alone: {generation:.2f} s wall, {generation_cpu:.2f} s CPU), "
            f"{size / 1e6:.1f} MB file, "
            f"peak RSS of the process {peak:.0f} MB"
        )
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
