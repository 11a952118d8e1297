"""merge: statement trust (0003) and replay keys with program names (0004)

Revision ID: 0005
Revises: 0003, 0004
Create Date: 2026-12-01 10:00:00

0003 and 0004 were written in parallel, both on 0002. A merge revision rather than re-chaining
0004 onto 0003: a database already upgraded to 0004 then still gets 0003 applied, where a
re-chained 0004 would make alembic believe 0003 was there. Nothing to change here.
"""

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | Sequence[str] | None = ("0003", "0004")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
