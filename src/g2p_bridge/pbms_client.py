"""A typed client for the bridge's G2P Connect API, as a PBMS (or an operator) calls it.

It wraps every message in the G2P Connect header, writes amounts as plain-decimal strings
(never a float, never an exponent), and turns an ``rjct`` answer into ``BridgeRefused`` with
the bridge's reason code. A bulk submission goes in chunks, each with its own message id, so a
retried chunk is answered from the bridge's replay record instead of being applied twice.

    with PbmsClient("http://127.0.0.1:8000", token=pbms_token, sender_id="mis-1") as bridge:
        envelope = bridge.create_envelope(EnvelopeSpec("CASH", 2, Decimal("200.00"), "USD"))
        bridge.create_disbursements(envelope.envelope_id, items)
        status = bridge.envelope_status(envelope.envelope_id)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import islice
from typing import Any, Protocol

import httpx
import orjson

JSON = "application/json"


class BridgeRefused(Exception):
    """The bridge answered with a refusal (``rjct``, an HTTP error) or not in G2P Connect."""

    def __init__(
        self,
        action: str,
        http_status: int,
        reason_code: str | None,
        reason_message: str | None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        self.action = action
        self.http_status = http_status
        self.reason_code = reason_code
        self.reason_message = reason_message
        self.body = body
        # A 503 while the database is away says when to come back.
        self.retry_after = retry_after
        reason = " ".join(r for r in (reason_code, reason_message) if r)
        super().__init__(f"{action} refused: HTTP {http_status} {reason}".rstrip())


def plain(amount: Decimal) -> str:
    """``amount`` in plain decimal notation, as the bridge requires (``1E+2`` is refused)."""
    if not amount.is_finite():
        raise ValueError(f"not an amount: {amount}")
    return format(amount, "f")


def request_header(
    action: str,
    count: int = 1,
    sender_id: str = "pbms",
    message_id: str | None = None,
    receiver_id: str = "bridge",
) -> dict[str, Any]:
    """A G2P Connect request header; a fresh message id unless one is given (a retry)."""
    return {
        "version": "1.0.0",
        "message_id": message_id or uuid.uuid4().hex,
        "message_ts": datetime.now(UTC).isoformat(),
        "action": action,
        "sender_id": sender_id,
        "sender_uri": "",
        "receiver_id": receiver_id,
        "total_count": count,
        "is_msg_encrypted": False,
        "meta": None,
    }


class DisbursementLike(Protocol):
    """What one disbursement to submit carries (``g2p_bridge.workload.WorkItem`` is one)."""

    @property
    def disbursement_id(self) -> str | None: ...
    @property
    def beneficiary_id(self) -> str: ...
    @property
    def beneficiary_name(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def financial_address(self) -> str | None: ...
    @property
    def mis_reference_number(self) -> str | None: ...
    @property
    def narrative(self) -> str | None: ...


@dataclass(frozen=True)
class DisbursementItem:
    beneficiary_id: str
    beneficiary_name: str
    amount: Decimal
    disbursement_id: str | None = None  # None: the bridge gives it one
    financial_address: str | None = None  # None: the program's ID mapper finds it
    mis_reference_number: str | None = None
    narrative: str | None = None


def disbursement_message(envelope_id: str, item: DisbursementLike) -> dict[str, Any]:
    message: dict[str, Any] = {
        "disbursement_envelope_id": envelope_id,
        "beneficiary_id": item.beneficiary_id,
        "beneficiary_name": item.beneficiary_name,
        "disbursement_amount": plain(item.amount),
    }
    optional = {
        "disbursement_id": item.disbursement_id,
        "financial_address": item.financial_address,
        "mis_reference_number": item.mis_reference_number,
        "narrative": item.narrative,
    }
    message.update({k: v for k, v in optional.items() if v is not None})
    return message


@dataclass(frozen=True)
class ProgramConfig:
    mnemonic: str
    sponsor_bank_code: str
    sponsor_bank_account_number: str
    currency: str
    resolver: str = "inline"  # how beneficiaries' addresses are found: inline, table, ...
    sponsor_bank_branch_code: str | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "program_mnemonic": self.mnemonic,
            "sponsor_bank_code": self.sponsor_bank_code,
            "sponsor_bank_account_number": self.sponsor_bank_account_number,
            "sponsor_bank_account_currency": self.currency,
            "id_mapper_resolution_required": True,
            "resolver": self.resolver,
        }
        if self.sponsor_bank_branch_code is not None:
            message["sponsor_bank_branch_code"] = self.sponsor_bank_branch_code
        return message


@dataclass(frozen=True)
class EnvelopeSpec:
    program: str
    number_of_disbursements: int
    total_amount: Decimal
    currency: str
    schedule_date: date | None = None  # None: today (UTC)
    cycle_code: str | None = None  # None: the schedule date's year and month
    frequency: str = "Monthly"
    envelope_id: str | None = None  # None: the bridge gives it one
    number_of_beneficiaries: int | None = None  # None: one per disbursement

    def message(self) -> dict[str, Any]:
        day = self.schedule_date or datetime.now(UTC).date()
        message: dict[str, Any] = {
            "benefit_program_mnemonic": self.program,
            "disbursement_frequency": self.frequency,
            "cycle_code_mnemonic": self.cycle_code or day.strftime("%Y-%m"),
            "number_of_beneficiaries": self.number_of_beneficiaries
            if self.number_of_beneficiaries is not None
            else self.number_of_disbursements,
            "number_of_disbursements": self.number_of_disbursements,
            "total_disbursement_amount": plain(self.total_amount),
            "disbursement_currency_code": self.currency,
            "disbursement_schedule_date": day.isoformat(),
        }
        if self.envelope_id is not None:
            message["disbursement_envelope_id"] = self.envelope_id
        return message


@dataclass(frozen=True)
class Program:
    mnemonic: str
    sponsor_bank_code: str | None
    sponsor_bank_account_number: str | None
    currency: str | None
    resolver: str | None

    @classmethod
    def of(cls, m: dict[str, Any]) -> Program:
        return cls(
            m["program_mnemonic"],
            m.get("sponsor_bank_code"),
            m.get("sponsor_bank_account_number"),
            m.get("sponsor_bank_account_currency"),
            m.get("resolver"),
        )


@dataclass(frozen=True)
class Envelope:
    envelope_id: str
    program: str
    number_of_disbursements: int
    total_amount: Decimal
    currency: str
    schedule_date: date
    cancelled: bool

    @classmethod
    def of(cls, m: dict[str, Any]) -> Envelope:
        return cls(
            m["disbursement_envelope_id"],
            m["benefit_program_mnemonic"],
            int(m["number_of_disbursements"]),
            Decimal(str(m["total_disbursement_amount"])),
            m["disbursement_currency_code"],
            date.fromisoformat(m["disbursement_schedule_date"]),
            m.get("cancellation_status") == "Cancelled",
        )


@dataclass(frozen=True)
class EnvelopeStatus:
    envelope_id: str
    received: int
    received_amount: Decimal
    shipped: int
    reconciled: int  # reversals included: a reversal is reconciled too
    reversed: int
    failed: int
    cancelled: int
    funds_available: str
    funds_blocked: str
    funds_blocked_reference: str | None
    by_state: dict[str, int]
    raw: dict[str, Any] = field(repr=False)  # the message as the bridge sent it

    @classmethod
    def of(cls, m: dict[str, Any]) -> EnvelopeStatus:
        return cls(
            envelope_id=m["disbursement_envelope_id"],
            received=int(m["number_of_disbursements_received"]),
            received_amount=Decimal(str(m["total_disbursement_amount_received"])),
            shipped=int(m["number_of_disbursements_shipped"]),
            reconciled=int(m["number_of_disbursements_reconciled"]),
            reversed=int(m["number_of_disbursements_reversed"]),
            failed=int(m["number_of_disbursements_failed"]),
            cancelled=int(m["number_of_disbursements_cancelled"]),
            funds_available=m["funds_available_with_bank"],
            funds_blocked=m["funds_blocked_with_bank"],
            funds_blocked_reference=m.get("funds_blocked_reference_number"),
            by_state={str(k): int(v) for k, v in (m.get("disbursements_by_state") or {}).items()},
            raw=m,
        )

    def settled(self, count: int) -> bool:
        """Every one of ``count`` disbursements is reconciled, reversed, failed or cancelled."""
        return self.reconciled + self.failed >= count - self.cancelled


@dataclass(frozen=True)
class DisbursementStatus:
    disbursement_id: str
    state: str
    state_reason: str | None
    envelope_id: str | None
    amount: Decimal | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, m: dict[str, Any]) -> DisbursementStatus:
        amount = m.get("disbursement_amount")
        return cls(
            m["disbursement_id"],
            m.get("state") or "UNKNOWN",
            m.get("state_reason"),
            m.get("disbursement_envelope_id"),
            None if amount is None else Decimal(str(amount)),
            m,
        )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """A 503's ``Retry-After`` in seconds (the delta form the bridge sends), or None."""
    if response.status_code != 503:
        return None
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def refusal(action: str, response: httpx.Response) -> BridgeRefused | None:
    """The refusal in ``response``, or None when it is a success."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return BridgeRefused(
            action,
            response.status_code,
            None,
            response.text[:300],
            None,
            retry_after_seconds(response),
        )
    head = data.get("header") if isinstance(data, dict) else None
    head = head if isinstance(head, dict) else {}
    if response.status_code < 400 and head.get("status") != "rjct":
        return None
    return BridgeRefused(
        action,
        response.status_code,
        head.get("status_reason_code"),
        head.get("status_reason_message"),
        data,
        retry_after_seconds(response),
    )


def _chunked(items: Iterable[DisbursementLike], size: int) -> Iterator[list[DisbursementLike]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class PbmsClient:
    """One caller of the bridge: its URL, its bearer token and the sender id the token names.

    ``http`` may be any ``httpx.Client`` (a FastAPI ``TestClient`` drives an in-process app);
    the client then belongs to the caller, who closes it."""

    def __init__(
        self,
        base_url: str = "",
        token: str | None = None,
        sender_id: str = "pbms",
        http: httpx.Client | None = None,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sender_id = sender_id
        self._owned = http is None
        self.http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout)
        self.timeout = timeout
        self.headers = {"content-type": JSON, **(headers or {})}
        if token is not None:
            self.headers["authorization"] = f"Bearer {token}"

    def __enter__(self) -> PbmsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self.http.close()

    # ----------------------------------------------------------------- the wire

    def body(
        self, action: str, message: Any, count: int = 1, message_id: str | None = None
    ) -> bytes:
        """A whole request, encoded: sent again as it is, it is the same message (a replay)."""
        header = request_header(action, count, self.sender_id, message_id)
        return orjson.dumps({"header": header, "message": message})

    def post(self, action: str, content: bytes) -> httpx.Response:
        """Sends an encoded request to ``/<action>`` and returns the answer unread."""
        return self.http.post(f"/{action}", content=content, headers=self.headers)

    def call(self, action: str, message: Any, count: int = 1) -> Any:
        """Sends one message; returns the answer's ``message`` or raises ``BridgeRefused``."""
        response = self.post(action, self.body(action, message, count))
        problem = refusal(action, response)
        if problem is not None:
            raise problem
        return orjson.loads(response.content).get("message")

    # ----------------------------------------------------------------- programs and envelopes

    def create_program(self, config: ProgramConfig) -> Program:
        """Configures a benefit program (the admin role)."""
        return Program.of(self.call("create_benefit_program_configuration", config.message()))

    def create_envelope(self, spec: EnvelopeSpec) -> Envelope:
        return Envelope.of(self.call("create_disbursement_envelope", spec.message()))

    def amend_envelope(
        self,
        envelope_id: str,
        number_of_disbursements: int | None = None,
        total_amount: Decimal | None = None,
        schedule_date: date | None = None,
        number_of_beneficiaries: int | None = None,
    ) -> Envelope:
        """Changes what the envelope declares; what is not given stays as it is."""
        message: dict[str, Any] = {"disbursement_envelope_id": envelope_id}
        if number_of_disbursements is not None:
            message["number_of_disbursements"] = number_of_disbursements
        if number_of_beneficiaries is not None:
            message["number_of_beneficiaries"] = number_of_beneficiaries
        if total_amount is not None:
            message["total_disbursement_amount"] = plain(total_amount)
        if schedule_date is not None:
            message["disbursement_schedule_date"] = schedule_date.isoformat()
        return Envelope.of(self.call("amend_disbursement_envelope", message))

    def cancel_envelope(self, envelope_id: str) -> Envelope:
        return Envelope.of(
            self.call("cancel_disbursement_envelope", {"disbursement_envelope_id": envelope_id})
        )

    def envelope_status(self, envelope_id: str) -> EnvelopeStatus:
        return EnvelopeStatus.of(self.call("get_disbursement_envelope_status", envelope_id))

    def wait_settled(
        self,
        envelope_id: str,
        count: int,
        timeout: float,
        poll: float = 0.3,
        on_change: Callable[[EnvelopeStatus], None] | None = None,
    ) -> EnvelopeStatus:
        """Polls the envelope until ``count`` disbursements are settled or ``timeout`` passes;
        returns the last status either way (``settled(count)`` tells which)."""
        deadline = time.monotonic() + timeout
        last: EnvelopeStatus | None = None
        while True:
            status = self.envelope_status(envelope_id)
            if on_change is not None and (last is None or status.raw != last.raw):
                on_change(status)
            last = status
            if status.settled(count) or time.monotonic() >= deadline:
                return status
            time.sleep(poll)

    # ----------------------------------------------------------------- disbursements

    def submit_disbursements(
        self, envelope_id: str, items: Sequence[DisbursementLike], message_id: str | None = None
    ) -> list[str]:
        """One request of disbursements; returns their ids as the bridge stored them."""
        messages = [disbursement_message(envelope_id, item) for item in items]
        content = self.body("create_disbursements", messages, len(messages), message_id)
        response = self.post("create_disbursements", content)
        problem = refusal("create_disbursements", response)
        if problem is not None:
            raise problem
        stored = orjson.loads(response.content).get("message") or []
        return [str(s.get("disbursement_id")) for s in stored]

    def create_disbursements(
        self, envelope_id: str, items: Iterable[DisbursementLike], chunk_size: int = 1000
    ) -> int:
        """Every item, in requests of ``chunk_size``, one chunk in memory at a time; returns how
        many the bridge accepted."""
        return sum(
            len(self.submit_disbursements(envelope_id, chunk))
            for chunk in _chunked(items, chunk_size)
        )

    def cancel_disbursements(self, disbursement_ids: Sequence[str]) -> list[str]:
        """Cancels disbursements not yet shipped; returns the ids the bridge cancelled."""
        message = [{"disbursement_id": d} for d in disbursement_ids]
        answer = self.call("cancel_disbursements", message, len(message)) or []
        return [str(a.get("disbursement_id")) for a in answer]

    def disbursement_status(self, disbursement_ids: Sequence[str]) -> list[DisbursementStatus]:
        answer = self.call("get_disbursement_status", list(disbursement_ids), len(disbursement_ids))
        return [DisbursementStatus.of(m) for m in answer or []]

    # ----------------------------------------------------------------- statements

    def upload_mt940(self, content: bytes, filename: str = "statement.txt") -> str:
        """Uploads an account statement (the bank role); returns its statement id."""
        headers = {k: v for k, v in self.headers.items() if k != "content-type"}
        response = self.http.post(
            "/upload_mt940",
            files={"statement_file": (filename, content, "text/plain")},
            headers=headers,
        )
        problem = refusal("upload_mt940", response)
        if problem is not None:
            raise problem
        return str(orjson.loads(response.content)["statement_id"])
