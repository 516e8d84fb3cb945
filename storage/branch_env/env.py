"""Generic Alembic environment for an independent migration branch (e.g. a plugin's own tables):
runs on the connection handed over by `storage.migrate.upgrade_branch`, recording its revisions
in its own version table."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=config.attributes.get("target_metadata"),
    version_table=config.attributes["version_table"],
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
