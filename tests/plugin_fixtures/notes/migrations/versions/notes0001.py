"""notes plugin: its table.

Revision ID: notes0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "notes0001"
down_revision = None
branch_labels = ("notes",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes_notes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_notes_notes_owner_id", "notes_notes", ["owner_id"])


def downgrade() -> None:
    op.drop_table("notes_notes")
