"""A sponsor bank's profile chooses its connector and, for a file channel, its conventions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from g2p_bridge.connectors.banks.base import load_bank_connector
from g2p_bridge.connectors.banks.example_bank import ExampleBankConnector
from g2p_bridge.connectors.banks.iso20022_sftp import Iso20022SftpConnector
from g2p_bridge.core.bank_files import kind_of, reason_text
from g2p_bridge.formats.iso20022 import StatusReason
from g2p_bridge.settings import BankConnectorSettings, Settings


def test_the_channel_not_the_bank_code_picks_the_connector() -> None:
    sftp = load_bank_connector("NORTH", BankConnectorSettings(channel="iso20022-sftp"))
    api = load_bank_connector("SOUTH", BankConnectorSettings(channel="example-bank"))
    legacy = load_bank_connector("EXAMPLE", BankConnectorSettings())
    try:
        assert isinstance(sftp, Iso20022SftpConnector)
        assert sftp.poll_interval_seconds == 60
        assert isinstance(api, ExampleBankConnector) and api.poll_interval_seconds is None
        assert isinstance(legacy, ExampleBankConnector)
    finally:
        for connector in (sftp, api, legacy):
            connector.close()
    with pytest.raises(LookupError, match="no bank connector 'carrier-pigeon'"):
        load_bank_connector("NORTH", BankConnectorSettings(channel="carrier-pigeon"))


def test_profiles_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__NORTH__CHANNEL", "iso20022-sftp")
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__NORTH__PAIN001_VERSION", "pain.001.001.03")
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__NORTH__SFTP__PORT", "2222")
    monkeypatch.setenv("G2P_BRIDGE_BANK_CONNECTORS__NORTH__SFTP__KNOWN_HOSTS_FILE", "/k")
    north = Settings().bank_connectors["NORTH"]
    assert north.channel == "iso20022-sftp"
    assert north.pain001_version == "pain.001.001.03"
    assert (north.sftp.port, north.sftp.known_hosts_file) == (2222, "/k")


@pytest.mark.parametrize("name", ["{batch}.xml", "{batch_id}.txt", "x/{batch_id}.xml"])
def test_a_payment_file_name_must_be_one_a_resend_is_recognised_by(name: str) -> None:
    with pytest.raises(ValidationError, match="payment_file_name"):
        BankConnectorSettings(payment_file_name=name)


def test_prearranged_funds_pass_and_the_block_is_the_envelope_key() -> None:
    connector = Iso20022SftpConnector(BankConnectorSettings(channel="iso20022-sftp"))
    check = connector.check_funds("2000000001", "USD", Decimal("100.00"))
    block = connector.block_funds("2000000001", "USD", Decimal("100.00"), "block-env-1")
    assert check.sufficient and "pre-arranged" in (check.detail or "")
    assert (block.blocked, block.reference) == (True, "block-env-1")


def test_outbox_names_and_reason_texts() -> None:
    assert kind_of("r-1.pain002.xml") == "pain.002"
    assert kind_of("s.camt053.xml") == kind_of("n.camt054.xml") == kind_of("m.sta") == "statement"
    assert kind_of("r-1.pain002.xml.part") is None and kind_of("notes.txt") is None
    assert reason_text((StatusReason("AC01", None),)) == "AC01 incorrect account number"
    assert reason_text((StatusReason("AC04", "Account closed"),)) == "AC04 Account closed"
    assert reason_text(()) == "no reason given"


def test_unprefixed_variables_never_reach_a_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    # BASE_URL or CHANNEL set for some other program in the same environment used to be read
    # into every bank's profile.
    monkeypatch.setenv("BASE_URL", "http://elsewhere.example")
    monkeypatch.setenv("CHANNEL", "iso20022-sftp")
    example = Settings().bank_connectors["EXAMPLE"]
    assert (example.base_url, example.channel) == ("http://127.0.0.1:8003", None)
