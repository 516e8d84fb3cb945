"""Provenance of bot and plugin messages (`messages.provenance`): the facts a reply was written
from and the users a proactive message is about, so that erasing a user finds the replies that
quote or paraphrase them in other people's conversations.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from storage.naming import t

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(t("messages"), sa.Column("provenance", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute(f"ALTER TABLE {t('messages')} DROP COLUMN provenance")  # SQLite >= 3.35 too
