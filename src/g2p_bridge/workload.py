"""A deterministic workload of beneficiaries and disbursements, for the demo, the bench and tests.

Everything is a function of the index ``i`` and the ``seed``: the same workload gives the same
beneficiaries, amounts and destinations on every run and machine, and is generated in chunks, so
a million disbursements take no more memory than one request's worth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import httpx


class Destination(StrEnum):
    """Where a beneficiary's money goes."""

    OTHER_BANK = "other-bank"  # an account at another bank, reached through the sponsor bank
    SPONSOR_BANK = "sponsor-bank"  # an account at the sponsor bank itself
    MOBILE = "mobile"  # a mobile wallet
    EMAIL = "email"  # a wallet named by an e-mail address
    UNKNOWN = "unknown"  # nobody can tell where: the bridge leaves it UNRESOLVED
    NO_SUCH_ACCOUNT = "no-such-account"  # at the sponsor bank, which has no such account: returned


# One destination per index, repeating: half to other banks, a fifth each to the sponsor bank
# and mobile wallets, a tenth to e-mail wallets.
MIXED = (
    (Destination.OTHER_BANK,) * 5
    + (Destination.SPONSOR_BANK,) * 2
    + (Destination.MOBILE,) * 2
    + (Destination.EMAIL,)
)
OTHER_BANKS = ("NORTHBANK", "SOUTHBANK")
WALLETS = ("MPESA", "AIRTEL")
BASE_AMOUNT = Decimal("50.00")
AMOUNT_STEP = Decimal("5.25")


@dataclass(frozen=True)
class BeneficiaryAccount:
    """An account the sponsor bank must hold before the workload is paid."""

    account_number: str
    holder_name: str
    phone: str


@dataclass(frozen=True)
class WorkItem:
    """One beneficiary and the disbursement to them."""

    index: int
    disbursement_id: str | None  # None: the bridge gives it an id
    beneficiary_id: str
    beneficiary_name: str
    amount: Decimal
    destination: Destination
    # What the PBMS sends inline, or the ID mapper holds; for UNKNOWN an address nobody parses.
    financial_address: str
    mis_reference_number: str
    narrative: str

    @property
    def known(self) -> bool:
        """Whether an ID mapper table holds this beneficiary's address."""
        return self.destination is not Destination.UNKNOWN

    @property
    def leaves_sponsor_bank(self) -> bool:
        """Paid onwards to another institution, where the bank's simulated failures happen."""
        return self.destination in (Destination.OTHER_BANK, Destination.MOBILE, Destination.EMAIL)


def _stride(fraction: Decimal) -> int | None:
    """One index in this many is chosen for ``fraction`` (0: none)."""
    if fraction < 0 or fraction > 1:
        raise ValueError("a fraction lies between 0 and 1")
    return None if fraction == 0 else max(1, round(1 / fraction))


@dataclass(frozen=True)
class Workload:
    """``count`` disbursements to ``count`` beneficiaries.

    ``unknown_fraction`` of them (one in round(1/fraction), spread evenly) have an address nobody
    knows; ``returns_fraction`` go to an account the sponsor bank does not have, which it pays
    into suspense and returns (REVERSED). ``seed`` shifts which indices those are. The rest
    follow ``mix``. ``own_accounts``: how many sponsor-bank accounts the SPONSOR_BANK
    beneficiaries share (None: one each)."""

    count: int
    seed: int = 0
    unknown_fraction: Decimal = Decimal("0.001")
    returns_fraction: Decimal = Decimal("0.001")
    mix: tuple[Destination, ...] = MIXED
    sponsor_bank: str = "EXAMPLE"
    own_accounts: int | None = 50
    id_prefix: str | None = "d"  # disbursement ids "<prefix>-<i:08d>"; None: the bridge's
    narrative: str = "Monthly cash transfer"

    def __post_init__(self) -> None:
        if self.count < 0 or not self.mix:
            raise ValueError("a workload has a count of zero or more and a non-empty mix")
        if self.own_accounts is not None and self.own_accounts < 1:
            raise ValueError("own_accounts is None or positive")
        _stride(self.unknown_fraction), _stride(self.returns_fraction)  # each in [0, 1]

    def destination(self, i: int) -> Destination:
        shifted = i + self.seed
        unknown = _stride(self.unknown_fraction)
        # The last index of each stride is unknown, the one before it returned.
        if unknown is not None and (shifted + 1) % unknown == 0:
            return Destination.UNKNOWN
        returns = _stride(self.returns_fraction)
        if returns is not None and (shifted + 2) % returns == 0:
            return Destination.NO_SUCH_ACCOUNT
        return self.mix[i % len(self.mix)]

    @staticmethod
    def amount(i: int) -> Decimal:
        return BASE_AMOUNT + (i % 7) * AMOUNT_STEP

    def own_account(self, i: int) -> str:
        return f"BEN-{i if self.own_accounts is None else i % self.own_accounts:08d}"

    def address(self, i: int, destination: Destination) -> str:
        match destination:
            case Destination.OTHER_BANK:
                return f"account:{400000000 + i}@{OTHER_BANKS[i % 2]}.BR{i % 5:02d}"
            case Destination.SPONSOR_BANK:
                return f"account:{self.own_account(i)}@{self.sponsor_bank}.BR01"
            case Destination.MOBILE:
                return f"mobile:07{i:08d}@{WALLETS[i % 2]}"
            case Destination.EMAIL:
                return f"email:user{i}@example.org@PAYMAIL"
            case Destination.NO_SUCH_ACCOUNT:
                return f"account:NOSUCH{i:08d}@{self.sponsor_bank}.BR01"
            case Destination.UNKNOWN:
                return f"bogus-address-{i}"

    def disbursement_id(self, i: int) -> str | None:
        return None if self.id_prefix is None else f"{self.id_prefix}-{i:08d}"

    def item(self, i: int) -> WorkItem:
        destination = self.destination(i)
        return WorkItem(
            index=i,
            disbursement_id=self.disbursement_id(i),
            beneficiary_id=f"NID-{i:08d}",
            beneficiary_name=f"Beneficiary {i}",
            amount=self.amount(i),
            destination=destination,
            financial_address=self.address(i, destination),
            mis_reference_number=f"MIS-{i}",
            narrative=self.narrative,
        )

    def items(self, start: int = 0, stop: int | None = None) -> Iterator[WorkItem]:
        for i in range(start, self.count if stop is None else min(stop, self.count)):
            yield self.item(i)

    def chunks(self, size: int) -> Iterator[list[WorkItem]]:
        """The workload in lists of at most ``size`` items, one list alive at a time."""
        if size < 1:
            raise ValueError("a chunk holds at least one item")
        for start in range(0, self.count, size):
            yield list(self.items(start, start + size))

    def total(self) -> Decimal:
        return sum((self.amount(i) for i in range(self.count)), Decimal(0))

    def sponsor_bank_accounts(self) -> Iterator[BeneficiaryAccount]:
        """Each account at the sponsor bank that SPONSOR_BANK beneficiaries are paid into, once."""
        if self.own_accounts is not None:
            indices: Iterator[int] = iter(range(min(self.own_accounts, self.count)))
        else:
            indices = (
                i for i in range(self.count) if self.destination(i) is Destination.SPONSOR_BANK
            )
        for i in indices:
            yield BeneficiaryAccount(self.own_account(i), f"Beneficiary {i}", f"07{i:08d}")

    def mapping_rows(self) -> Iterator[tuple[str, str]]:
        """(beneficiary id, financial address) of every beneficiary an ID mapper knows."""
        for item in self.items():
            if item.known:
                yield item.beneficiary_id, item.financial_address


def open_example_bank_accounts(
    bank: httpx.Client,
    workload: Workload,
    program_account: str,
    deposit: Decimal,
    currency: str = "USD",
) -> int:
    """Opens, at the Example Bank ``bank`` talks to, the program account holding ``deposit``
    and every beneficiary account the workload pays into; returns how many of those."""
    bank.post(
        "/accounts",
        json={
            "account_number": program_account,
            "holder_name": "Ministry of Social Protection",
            "currency": currency,
            "initial_deposit": format(deposit, "f"),
        },
    ).raise_for_status()
    opened = 0
    for account in workload.sponsor_bank_accounts():
        bank.post(
            "/accounts",
            json={
                "account_number": account.account_number,
                "holder_name": account.holder_name,
                "currency": currency,
                "phone": account.phone,
            },
        ).raise_for_status()
        opened += 1
    return opened
