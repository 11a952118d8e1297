"""Resolver speaking the G2P Connect ID-account mapper's synchronous ``resolve`` API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from g2p_bridge.connectors.mappers.base import MapperUnavailable, ResolveItem, Resolver, Unresolved
from g2p_bridge.models.base import new_id, utcnow


class G2PConnectResolver(Resolver):
    def resolve(self, items: Sequence[ResolveItem]) -> dict[str, str | Unresolved]:
        now = utcnow().isoformat()
        body = {
            "signature": None,
            "header": {
                "version": "1.0.0",
                "message_id": new_id(),
                "message_ts": now,
                "action": "resolve",
                "sender_id": "g2p-bridge",
                "sender_uri": "",
                "receiver_id": "mapper",
                "total_count": len(items),
                "is_msg_encrypted": False,
            },
            "message": {
                "transaction_id": new_id(),
                "resolve_request": [
                    {
                        "reference_id": item.disbursement_id,
                        "timestamp": now,
                        "id": item.beneficiary_id,
                        "scope": "details",
                    }
                    for item in items
                ],
            },
        }
        try:
            response = httpx.post(
                self.settings.mapper_url, json=body, timeout=self.settings.mapper_timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise MapperUnavailable(f"mapper: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise MapperUnavailable(f"mapper: HTTP {response.status_code}")
        try:
            data: Any = response.json()
            answers = data["message"]["resolve_response"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MapperUnavailable(
                f"mapper: unreadable answer (HTTP {response.status_code})"
            ) from exc
        result: dict[str, str | Unresolved] = {}
        for answer in answers if isinstance(answers, list) else []:
            if not isinstance(answer, dict):
                continue
            reference = str(answer.get("reference_id") or "")
            if answer.get("status") == "succ" and answer.get("fa"):
                result[reference] = str(answer["fa"])
            else:
                reason = answer.get("status_reason_message") or answer.get("status_reason_code")
                result[reference] = Unresolved(f"mapper: {reason or 'not found'}")
        for item in items:
            result.setdefault(item.disbursement_id, Unresolved("mapper gave no answer for it"))
        return result
