"""Alembic environment: runs migrations on the URL given by g2p_bridge.migrations.upgrade()."""

from __future__ import annotations

from alembic import context

from g2p_bridge.db import make_engine
from g2p_bridge.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("sqlalchemy.url must be set (use g2p_bridge.migrations.upgrade)")

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
