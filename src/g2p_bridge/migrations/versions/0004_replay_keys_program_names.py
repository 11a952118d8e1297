"""replays keyed on sender, action and message id, with a digest of the request; program names

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01 10:00:00

A message id reused for another action used to return the other action's answer, and one reused
with a different body returned the first body's answer: the key now holds the action (the
route, not the client's header), and the digest tells a replay from a different request. Rows
stored before this revision have no digest and are replayed as before.

Programs gain the descriptive fields of OpenG2P 1.1.0's configuration: name and funding
organisation.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("benefit_programs") as batch:
        batch.add_column(sa.Column("benefit_program_name", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("funding_org_code", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("funding_org_name", sa.String(length=256), nullable=True))
    with op.batch_alter_table("processed_requests", recreate="auto") as batch:
        batch.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
        batch.drop_constraint("pk_processed_requests", type_="primary")
        batch.create_primary_key("pk_processed_requests", ["sender_id", "action", "message_id"])


def downgrade() -> None:
    with op.batch_alter_table("processed_requests", recreate="auto") as batch:
        batch.drop_constraint("pk_processed_requests", type_="primary")
        batch.create_primary_key("pk_processed_requests", ["sender_id", "message_id"])
        batch.drop_column("request_sha256")
    with op.batch_alter_table("benefit_programs") as batch:
        for column in ("funding_org_name", "funding_org_code", "benefit_program_name"):
            batch.drop_column(column)
