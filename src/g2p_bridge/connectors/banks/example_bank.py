"""Connector for the Example Bank's HTTP API (the OpenG2P Example Bank's, plus idempotency)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import orjson

from g2p_bridge.connectors.banks.base import (
    BankConnector,
    BankRejected,
    BankUnavailable,
    BlockResult,
    FundsCheck,
    PaymentBatchResult,
    PaymentInstruction,
    ReleaseResult,
    StatementEntry,
)
from g2p_bridge.formats.mt940 import six_line_narrative
from g2p_bridge.settings import BankConnectorSettings

# Client errors that say "not now" rather than "never": the same request may succeed later, so
# they are retried like a 5xx instead of failing the payments.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 425, 429})


class ExampleBankConnector(BankConnector):
    def __init__(
        self, settings: BankConnectorSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        """``transport`` replaces the network, for tests (``httpx.MockTransport``)."""
        super().__init__(settings)
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = httpx.Client(
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            verify=settings.verify_tls,
            headers=headers,
            transport=transport,
        )

    def _post(self, path: str, body: Any) -> dict[str, Any]:
        try:
            # orjson, not httpx's json=: the body of a 1,000-payment batch is the largest thing
            # a worker serialises, and the standard library spent a tenth of a send on it.
            response = self._client.post(
                path, content=orjson.dumps(body), headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise BankUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in RETRYABLE_CLIENT_ERRORS:
            raise BankUnavailable(f"{path}: HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise BankUnavailable(
                f"{path}: answer is not JSON (HTTP {response.status_code})"
            ) from exc
        if response.status_code >= 400:
            detail = (
                data.get("detail") or data.get("error_message") if isinstance(data, dict) else data
            )
            raise BankRejected(f"{path}: HTTP {response.status_code}: {detail}")
        if not isinstance(data, dict):
            raise BankUnavailable(f"{path}: unexpected answer {str(data)[:200]}")
        return data

    def check_funds(self, account_number: str, currency: str, amount: Decimal) -> FundsCheck:
        data = self._post(
            "/check_funds",
            {
                "account_number": account_number,
                "account_currency": currency,
                "total_funds_needed": str(amount),
            },
        )
        if data.get("status") != "success":
            raise BankRejected(data.get("error_message") or "funds check failed")
        return FundsCheck(
            sufficient=bool(data.get("has_sufficient_funds")),
            detail=data.get("error_message") or None,
        )

    def block_funds(
        self, account_number: str, currency: str, amount: Decimal, idempotency_key: str
    ) -> BlockResult:
        data = self._post(
            "/block_funds",
            {
                "account_number": account_number,
                "currency": currency,
                "amount": str(amount),
                "idempotency_key": idempotency_key,
            },
        )
        if data.get("status") == "success" and data.get("block_reference_no"):
            return BlockResult(blocked=True, reference=str(data["block_reference_no"]))
        return BlockResult(
            blocked=False, reference=None, detail=data.get("error_message") or "block refused"
        )

    def release_funds(
        self,
        account_number: str,
        currency: str,
        amount: Decimal,
        block_reference: str,
        idempotency_key: str,
    ) -> ReleaseResult:
        data = self._post(
            "/release_funds",
            {
                "account_number": account_number,
                "block_reference_no": block_reference,
                "currency": currency,
                "amount": str(amount),
                "idempotency_key": idempotency_key,
            },
        )
        if data.get("status") == "success" and data.get("release_reference_no"):
            return ReleaseResult(released=True, reference=str(data["release_reference_no"]))
        return ReleaseResult(
            released=False, reference=None, detail=data.get("error_message") or "release refused"
        )

    def initiate_payment(self, payments: list[PaymentInstruction]) -> PaymentBatchResult:
        body = []
        for p in payments:
            # OpenG2P's Example Bank stores these as non-null text: like the reference connector,
            # send what the address has and an empty string for the rest, never null.
            optional = {
                "beneficiary_account": p.beneficiary_account,
                "beneficiary_bank_code": p.beneficiary_bank_code,
                "beneficiary_branch_code": p.beneficiary_branch_code,
                "beneficiary_mobile_wallet_provider": p.beneficiary_mobile_wallet_provider,
                "beneficiary_phone_no": p.beneficiary_phone,
                "beneficiary_email": p.beneficiary_email,
                "beneficiary_email_wallet_provider": p.beneficiary_email_wallet_provider,
            }
            item: dict[str, Any] = {
                "payment_reference_number": p.payment_reference,
                "remitting_account": p.remitting_account,
                "remitting_account_currency": p.remitting_currency,
                "payment_amount": str(p.amount),
                "funds_blocked_reference_number": p.block_reference,
                "beneficiary_name": p.beneficiary_name,
                "beneficiary_account_currency": p.remitting_currency,
                "beneficiary_account_type": p.beneficiary_account_type,
                **{name: value or "" for name, value in optional.items()},
                "payment_date": p.payment_date.isoformat(),
            }
            for i in range(6):
                item[f"narrative_{i + 1}"] = (
                    p.narratives[i] if i < len(p.narratives) else None
                ) or ""
            body.append(item)
        data = self._post("/initiate_payment", body)
        duplicates = tuple(data.get("duplicate_payment_references") or ())
        if data.get("status") == "success":
            return PaymentBatchResult(accepted=True, duplicates=duplicates)
        return PaymentBatchResult(
            accepted=False,
            detail=data.get("error_message") or "batch refused",
            duplicates=duplicates,
        )

    def reversal_reason(self, entry: StatementEntry) -> str | None:
        """The return reason in either layout an Example Bank writes: the ``RTRN`` subfield, or
        line 6 of OpenG2P's six-line narrative, as OpenG2P's bridge reads it (never the whole
        block). A one-line narrative without subfields is neither: read as any bank's."""
        if "\n" in entry.details and not entry.subfields():
            narrative = six_line_narrative(entry.details)
            if narrative is not None:
                return narrative.reason or None
        return super().reversal_reason(entry)

    def close(self) -> None:
        self._client.close()
