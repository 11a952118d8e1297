"""The bench's workload: the package's generator (``g2p_bridge.workload``) with the bench's
shares, and what the Example Bank's deterministic failure simulation will make of it."""

from __future__ import annotations

from decimal import Decimal

from bench.config import OWN_ACCOUNTS, OWN_BANK
from g2p_bridge.workload import Workload

# One in a thousand beneficiaries has an address nobody can parse (UNRESOLVED), one in a
# thousand an account the Example Bank does not have (paid into suspense, returned: REVERSED).
UNKNOWN_FRACTION = Decimal("0.001")
RETURNS_FRACTION = Decimal("0.001")


def bench_workload(n: int, id_prefix: str) -> Workload:
    """``n`` disbursements with ids ``<id_prefix>-<i:08d>``."""
    return Workload(
        n,
        unknown_fraction=UNKNOWN_FRACTION,
        returns_fraction=RETURNS_FRACTION,
        sponsor_bank=OWN_BANK,
        own_accounts=OWN_ACCOUNTS,
        id_prefix=id_prefix,
    )


def expected_outcome(workload: Workload, seed: int, rate: float) -> dict[str, int]:
    """What the Example Bank's deterministic failure simulation will do to this workload."""
    from example_bank.processing import simulated_failure
    from g2p_bridge.workload import Destination

    reversed_ = unresolved = 0
    for item in workload.items():
        if item.destination is Destination.UNKNOWN:
            unresolved += 1
        elif item.destination is Destination.NO_SUCH_ACCOUNT or (
            item.leaves_sponsor_bank
            and simulated_failure(seed, item.disbursement_id or "", rate) is not None
        ):
            reversed_ += 1
    n = workload.count
    return {"reversed": reversed_, "unresolved": unresolved, "reconciled": n - unresolved}
