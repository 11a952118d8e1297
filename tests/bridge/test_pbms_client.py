"""g2p_bridge.pbms_client against the app itself (FastAPI's TestClient is an httpx.Client), on
PostgreSQL and SQLite: every call it offers, its typed results, exact amounts and the
refusals it raises."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import orjson
import pytest

from bridge_support import TODAY, mt940
from conftest import Client
from g2p_bridge.pbms_client import (
    BridgeRefused,
    DisbursementItem,
    EnvelopeSpec,
    PbmsClient,
    ProgramConfig,
    disbursement_message,
    plain,
)
from g2p_bridge.workload import Destination, Workload

ACCOUNT = "1000000001"


@pytest.fixture
def admin(client: Client, token) -> PbmsClient:  # type: ignore[no-untyped-def]
    return PbmsClient(http=client.http, token=token("ops-1", "admin"), sender_id="ops-1")


@pytest.fixture
def pbms(client: Client, token, admin: PbmsClient) -> PbmsClient:  # type: ignore[no-untyped-def]
    admin.create_program(ProgramConfig("PROG1", "EXAMPLE", ACCOUNT, "USD"))
    return PbmsClient(
        http=client.http, token=token("mis-1", "pbms", programs=["PROG1"]), sender_id="mis-1"
    )


def _items(count: int, prefix: str = "d") -> list[DisbursementItem]:
    # Amounts whose float sum is not exact: 0.10 + 0.20 + ... must stay cents.
    return [
        DisbursementItem(
            f"ben-{i}",
            f"Beneficiary {i}",
            Decimal("1000000.10") + Decimal(i) / 10,
            f"{prefix}-{i:04d}",
            f"account:ACC{i:08d}@OTHERBANK.BR1",
            f"mis-{i}",
            "cash",
        )
        for i in range(count)
    ]


def test_program_is_configured_and_read_back(admin: PbmsClient) -> None:
    program = admin.create_program(ProgramConfig("PROG2", "EXAMPLE", "2000000002", "KES"))
    assert (program.mnemonic, program.currency, program.resolver) == ("PROG2", "KES", "inline")
    with pytest.raises(BridgeRefused) as refused:
        admin.create_program(ProgramConfig("PROG2", "EXAMPLE", "2000000002", "KES"))
    assert refused.value.error_code == "BENEFIT_PROGRAM_CONFIGURATION_ALREADY_EXISTS"
    assert 400 <= refused.value.http_status < 500


def test_envelope_disbursements_and_status_round_trip_exactly(pbms: PbmsClient) -> None:
    items = _items(5)
    total = sum((i.amount for i in items), Decimal(0))
    envelope = pbms.create_envelope(EnvelopeSpec("PROG1", 5, total, "USD", envelope_id="env-c1"))
    assert envelope.envelope_id == "env-c1"
    assert envelope.total_amount == total == Decimal("5000001.50")
    assert envelope.schedule_date == TODAY and not envelope.cancelled

    # Three requests of at most two: each its own message, all accepted once.
    assert pbms.create_disbursements("env-c1", items, chunk_size=2) == 5
    status = pbms.envelope_status("env-c1")
    assert (status.received, status.received_amount) == (5, total)
    # PROG1's resolver is inline: each address is resolved as it is received.
    assert status.by_state == {"RESOLVED": 5}
    assert not status.settled(5)

    states = pbms.disbursement_status(["d-0003", "d-0004"])
    assert [s.disbursement_id for s in states] == ["d-0003", "d-0004"]
    assert states[0].amount == Decimal("1000000.40") and states[0].state == "RESOLVED"

    assert pbms.cancel_disbursements(["d-0004"]) == ["d-0004"]
    status = pbms.envelope_status("env-c1")
    assert (status.received, status.cancelled) == (4, 1)


def test_a_resent_message_is_not_applied_twice(pbms: PbmsClient) -> None:
    items = _items(3, "r")
    total = sum((i.amount for i in items), Decimal(0))
    pbms.create_envelope(EnvelopeSpec("PROG1", 3, total, "USD", envelope_id="env-c2"))
    first = pbms.submit_disbursements("env-c2", items, message_id="msg-resent-1")
    again = pbms.submit_disbursements("env-c2", items, message_id="msg-resent-1")
    assert first == again == ["r-0000", "r-0001", "r-0002"]
    assert pbms.envelope_status("env-c2").received == 3
    # The same message id with other content is refused, not applied.
    with pytest.raises(BridgeRefused) as refused:
        pbms.submit_disbursements("env-c2", items[:2], message_id="msg-resent-1")
    assert refused.value.reason_code == "rjct.message_id.duplicate"


def test_amend_and_cancel_the_envelope(pbms: PbmsClient) -> None:
    pbms.create_envelope(EnvelopeSpec("PROG1", 2, Decimal("20.00"), "USD", envelope_id="env-c3"))
    later = TODAY + timedelta(days=3)
    amended = pbms.amend_envelope("env-c3", 3, Decimal("30.05"), later)
    assert (amended.number_of_disbursements, amended.total_amount) == (3, Decimal("30.05"))
    assert amended.schedule_date == later
    assert pbms.cancel_envelope("env-c3").cancelled
    with pytest.raises(BridgeRefused) as refused:
        pbms.cancel_envelope("env-c3")
    assert refused.value.error_code is not None and "CANCEL" in refused.value.error_code


def test_refusals_name_the_bridges_codes(pbms: PbmsClient, client: Client) -> None:
    with pytest.raises(BridgeRefused) as refused:
        pbms.envelope_status("no-such-envelope")
    assert refused.value.error_code == "DISBURSEMENT_ENVELOPE_NOT_FOUND"
    # A program the token does not grant.
    with pytest.raises(BridgeRefused) as refused:
        pbms.create_envelope(EnvelopeSpec("OTHER", 1, Decimal(1), "USD"))
    assert refused.value.http_status in (403, 422)
    # No token at all.
    anonymous = PbmsClient(http=client.http, sender_id="mis-1", headers={"authorization": ""})
    with pytest.raises(BridgeRefused) as refused:
        anonymous.envelope_status("env-x")
    assert refused.value.http_status == 401


def test_amounts_go_out_in_plain_decimal_notation(pbms: PbmsClient) -> None:
    assert plain(Decimal("1E+2")) == "100"
    assert plain(Decimal("0.000001")) == "0.000001"
    with pytest.raises(ValueError):
        plain(Decimal("NaN"))
    item = DisbursementItem("b", "B", Decimal("5E+1"))
    message = disbursement_message("env", item)
    body = orjson.loads(pbms.body("create_disbursements", [message, {"x": Decimal("1E+1")}], 2))
    assert body["header"]["sender_id"] == "mis-1" and body["header"]["total_count"] == 2
    assert body["message"] == [{**message, "disbursement_amount": "50"}, {"x": "10"}]
    spec = EnvelopeSpec("PROG1", 1, Decimal("5E+1"), "USD")
    assert spec.message()["total_disbursement_amount"] == "50"


def test_a_workload_is_submitted_in_chunks(pbms: PbmsClient) -> None:
    workload = Workload(25, id_prefix="w", own_accounts=5)
    kinds = {item.destination for item in workload.items()}
    assert Destination.UNKNOWN not in kinds  # one in a thousand: none of 25
    pbms.create_envelope(EnvelopeSpec("PROG1", 25, workload.total(), "USD", envelope_id="env-w"))
    assert pbms.create_disbursements("env-w", workload.items(), chunk_size=10) == 25
    status = pbms.envelope_status("env-w")
    assert (status.received, status.received_amount) == (25, workload.total())


def test_a_statement_is_uploaded_by_a_bank(client: Client, token, pbms: PbmsClient) -> None:  # type: ignore[no-untyped-def]
    bank = PbmsClient(
        http=client.http, token=token("bank-1", "bank", bank_codes=["EXAMPLE"]), sender_id="bank-1"
    )
    statement_id = bank.upload_mt940(mt940(ACCOUNT, []).encode(), "s1.txt")
    assert statement_id
    with pytest.raises(BridgeRefused) as refused:
        pbms.upload_mt940(mt940(ACCOUNT, []).encode())  # a PBMS is no bank
    assert refused.value.http_status == 403
