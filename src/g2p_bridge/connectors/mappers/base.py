"""The resolver interface, how resolvers are found, and how a financial address string is taken
apart into where the money goes."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.models.enums import FinancialAddressType
from g2p_bridge.settings import Settings

ENTRY_POINT_GROUP = "g2p_bridge.resolvers"


class MapperUnavailable(Exception):
    """The mapper could not be reached or failed: retry the batch later."""


# ResolveItem and Destination are made once per disbursement at ingest (inline addresses) and
# in every mapper batch: NamedTuples, as immutable as a frozen dataclass and made in a fifth of
# its time (a frozen dataclass sets each field through object.__setattr__).
class ResolveItem(NamedTuple):
    disbursement_id: str
    beneficiary_id: str
    inline_address: str | None


@dataclass(frozen=True, slots=True)
class Unresolved:
    reason: str


class Resolver(ABC):
    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory

    @abstractmethod
    def resolve(self, items: Sequence[ResolveItem]) -> dict[str, str | Unresolved]:
        """Financial address (or why there is none) per disbursement id; raises
        MapperUnavailable when the whole batch should be retried."""


class Destination(NamedTuple):
    address_type: FinancialAddressType
    bank_account_number: str | None = None
    bank_code: str | None = None
    branch_code: str | None = None
    mobile_number: str | None = None
    mobile_wallet_provider: str | None = None
    email_address: str | None = None
    email_wallet_provider: str | None = None


class AddressParser:
    """Takes a financial address apart with the configured regular expressions."""

    def __init__(self, settings: Settings) -> None:
        self._bank = re.compile(settings.fa_regex_bank_account)
        self._mobile = re.compile(settings.fa_regex_mobile_wallet)
        self._email = re.compile(settings.fa_regex_email_wallet)

    def parse(self, address: str) -> Destination | Unresolved:
        found = self._parse(address)
        if isinstance(found, Destination):
            # The patterns bound the shape, not the length of each part: a part longer than
            # the column it is stored in is this address's fault, said as such, not a
            # database error for the whole request (PostgreSQL) or a stored overlong value
            # on its way to a bank file (SQLite).
            for name, value in zip(Destination._fields, found, strict=True):
                limit = _PART_LIMITS.get(name)
                if value is not None and limit is not None and len(value) > limit:
                    return Unresolved(
                        f"financial address {address[:64]!r}: its {name} is longer than "
                        f"{limit} characters"
                    )
        return found

    def _parse(self, address: str) -> Destination | Unresolved:
        if match := self._bank.match(address):
            groups = match.groupdict()
            return Destination(
                FinancialAddressType.BANK_ACCOUNT,
                bank_account_number=groups.get("account_number"),
                bank_code=groups.get("bank_code"),
                branch_code=groups.get("branch_code"),
            )
        if match := self._mobile.match(address):
            groups = match.groupdict()
            return Destination(
                FinancialAddressType.MOBILE_WALLET,
                mobile_number=groups.get("mobile_number"),
                mobile_wallet_provider=groups.get("provider"),
            )
        if match := self._email.match(address):
            groups = match.groupdict()
            return Destination(
                FinancialAddressType.EMAIL_WALLET,
                email_address=groups.get("email_address"),
                email_wallet_provider=groups.get("provider"),
            )
        return Unresolved(f"financial address {address!r} matches no known format")


def _column_limits() -> dict[str, int]:
    from g2p_bridge.models import ResolvedAddress

    limits: dict[str, int] = {}
    for name in Destination._fields:
        column = ResolvedAddress.__table__.columns.get(name)
        length = getattr(column.type, "length", None) if column is not None else None
        if isinstance(length, int):
            limits[name] = length
    return limits


_PART_LIMITS = _column_limits()


@cache
def _registered() -> dict[str, type[Resolver]]:
    return {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_resolver(
    name: str, settings: Settings, session_factory: sessionmaker[Session]
) -> Resolver:
    resolver_class = _registered().get(name)
    if resolver_class is None:
        raise LookupError(f"no resolver {name!r}; installed: {sorted(_registered())}")
    return resolver_class(settings, session_factory)
