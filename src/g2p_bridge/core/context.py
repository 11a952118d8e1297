"""What a pipeline step needs besides its inputs: settings, sessions, and the plug-ins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.connectors.banks.base import BankConnector, load_bank_connector
from g2p_bridge.connectors.mappers.base import AddressParser, Resolver, load_resolver
from g2p_bridge.observability import InstrumentedBank
from g2p_bridge.settings import BankConnectorSettings, Settings

if TYPE_CHECKING:
    from g2p_bridge.core.callbacks import CallbackSender


@dataclass
class Context:
    settings: Settings
    session_factory: sessionmaker[Session]
    # Plug-ins are created once per process and reused: they hold HTTP connection pools.
    _banks: dict[str, BankConnector] = field(default_factory=dict)
    _resolvers: dict[str, Resolver] = field(default_factory=dict)
    _parser: AddressParser | None = None
    _callbacks: CallbackSender | None = None

    def bank(self, bank_code: str) -> BankConnector:
        if bank_code not in self._banks:
            settings = self.settings.bank_connectors.get(bank_code, BankConnectorSettings())
            connector = load_bank_connector(bank_code, settings)
            self._banks[bank_code] = InstrumentedBank(bank_code, connector)  # type: ignore[assignment]
        return self._banks[bank_code]

    def resolver(self, name: str) -> Resolver:
        if name not in self._resolvers:
            self._resolvers[name] = load_resolver(name, self.settings, self.session_factory)
        return self._resolvers[name]

    @property
    def address_parser(self) -> AddressParser:
        if self._parser is None:
            self._parser = AddressParser(self.settings)
        return self._parser

    def callbacks(self) -> CallbackSender:
        """The process's callback sender: its signing key and HTTP connection pool."""
        if self._callbacks is None:
            from g2p_bridge.core.callbacks import CallbackSender

            self._callbacks = CallbackSender(self.settings)
        return self._callbacks

    def warm_up(self) -> None:
        """Builds now what the first steps of a process would otherwise build while a payday
        waits: each configured bank's connector (its module, its TLS context) and the callback
        sender. A worker child calls it as it starts. No database connection: Celery kills a
        child that is not up within seconds, and a connection can hang (a failover) for longer."""
        for bank_code in self.settings.bank_connectors:
            self.bank(bank_code)
        self.callbacks()

    def use_bank(self, bank_code: str, connector: BankConnector) -> None:
        """Puts a given connector in place, as tests do with a fake bank."""
        self._banks[bank_code] = InstrumentedBank(bank_code, connector)  # type: ignore[assignment]

    def close(self) -> None:
        for connector in self._banks.values():
            connector.close()
        self._banks.clear()
        if self._callbacks is not None:
            self._callbacks.close()
            self._callbacks = None
