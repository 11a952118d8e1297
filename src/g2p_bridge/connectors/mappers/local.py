"""Resolvers that need no outside mapper: addresses given with the disbursement, or a local
table loaded from a CSV file (``g2p-bridge mappings load``)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from g2p_bridge.connectors.mappers.base import ResolveItem, Resolver, Unresolved
from g2p_bridge.db import is_postgres, transaction
from g2p_bridge.models import BeneficiaryAddress
from g2p_bridge.models.base import utcnow


def inline_answers(items: Sequence[ResolveItem]) -> dict[str, str | Unresolved]:
    """The disbursement's own ``financial_address``, else its beneficiary id taken as one."""
    return {item.disbursement_id: item.inline_address or item.beneficiary_id for item in items}


class InlineResolver(Resolver):
    """Needs nothing but the disbursement, so ingest resolves these itself (no mapper batch);
    the plug-in still serves rows received before that, and any caller without a parser."""

    def resolve(self, items: Sequence[ResolveItem]) -> dict[str, str | Unresolved]:
        return inline_answers(items)


class TableResolver(Resolver):
    def resolve(self, items: Sequence[ResolveItem]) -> dict[str, str | Unresolved]:
        ids = sorted({item.beneficiary_id for item in items})
        with transaction(self.session_factory) as session:
            known = dict(
                session.execute(
                    select(
                        BeneficiaryAddress.beneficiary_id, BeneficiaryAddress.financial_address
                    ).where(BeneficiaryAddress.beneficiary_id.in_(ids))
                ).all()
            )
        return {
            item.disbursement_id: known.get(item.beneficiary_id)
            or Unresolved(f"beneficiary {item.beneficiary_id} is not in the mapping table")
            for item in items
        }


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            beneficiary_id = (row.get("beneficiary_id") or "").strip()
            address = (row.get("financial_address") or "").strip()
            if beneficiary_id and address:
                yield {"beneficiary_id": beneficiary_id, "financial_address": address}


def load_mapping_csv(session: Session, path: Path, chunk_size: int = 5000) -> int:
    """Upserts ``beneficiary_id,financial_address`` rows in chunks; returns how many."""
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    count = 0
    chunk: list[dict[str, object]] = []

    def flush() -> None:
        statement = dialect_insert(BeneficiaryAddress).values(chunk)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["beneficiary_id"],
                set_={
                    "financial_address": statement.excluded.financial_address,
                    "updated_at": statement.excluded.updated_at,
                },
            )
        )
        chunk.clear()

    now = utcnow()
    for row in _csv_rows(path):
        chunk.append({**row, "updated_at": now})
        count += 1
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    return count
