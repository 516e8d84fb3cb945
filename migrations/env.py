"""Alembic environment. Runs synchronously on the connection that `storage.migrate` hands over
(config.attributes["connection"]), or on `sqlalchemy.url` / $DATABASE_URL when run from the
alembic CLI."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from storage.db import sync_url
from storage.models import Base
from storage.naming import t

config = context.config
target_metadata = Base.metadata
# `alembic_version`, or `<CLARA_TABLE_PREFIX>alembic_version` (storage.naming).
VERSION_TABLE = t("alembic_version")


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL (or use `clara db upgrade`)")
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
