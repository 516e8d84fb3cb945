"""Provenance of bot and plugin messages (`messages.provenance`): the facts a reply was written
from and the users a proactive message is about, so that erasing a user finds the replies that
quote or paraphrase them in other people's conversations.

Revision ID: 0004_purge
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_purge"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("provenance", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("provenance")
