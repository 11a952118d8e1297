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


def expected_outcome(
    workload: Workload, seed: int, rate: float, channel: str = "example-bank"
) -> dict[str, int]:
    """What the Example Bank's deterministic failure simulation will do to this workload.

    ``rejected``: payments the bank refuses before paying, so it holds no payment for them and
    the bridge fails them with the reason. Over ISO 20022 files a credit to an account the bank
    does not have is one: rejected with AC01 in pain.002. Its JSON API takes such a payment into
    suspense and returns it (REVERSED)."""
    from example_bank.processing import simulated_failure
    from g2p_bridge.workload import Destination

    reversed_ = unresolved = rejected = 0
    for item in workload.items():
        if item.destination is Destination.UNKNOWN:
            unresolved += 1
        elif item.destination is Destination.NO_SUCH_ACCOUNT and channel == "iso20022-sftp":
            rejected += 1
        elif item.destination is Destination.NO_SUCH_ACCOUNT or (
            item.leaves_sponsor_bank
            and simulated_failure(seed, item.disbursement_id or "", rate) is not None
        ):
            reversed_ += 1
    n = workload.count
    return {
        "reversed": reversed_,
        "unresolved": unresolved,
        "rejected": rejected,
        "reconciled": n - unresolved - rejected,
    }
