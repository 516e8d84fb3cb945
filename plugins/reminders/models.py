"""The reminders plugin's tables (created by migrations/versions/0001_reminders.py — keep in step).

Every row is keyed by the user it belongs to (`owner_id` / `user_id`), so delete/export are one
filter per table. Times are stored in UTC (timezone-aware columns); the user's timezone is kept
on each reminder so recurring ones are computed in local wall time (DST-correct).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clara.plugin_api import PluginBase, table_name

# A reload re-executes this module: forget our previous table definitions first.
for _stale in [t for name, t in PluginBase.metadata.tables.items() if name.startswith(table_name("reminders_"))]:
    PluginBase.metadata.remove(_stale)

PK = BigInteger().with_variant(Integer(), "sqlite")
TS = DateTime(timezone=True)


class Reminder(PluginBase):
    """One reminder. `next_at` is the next occurrence due (UTC); NULL once a one-off is done."""

    __tablename__ = table_name("reminders_reminders")
    __table_args__ = (
        Index(table_name("ix_reminders_due"), "status", "next_at"),
        Index(table_name("ix_reminders_owner"), "owner_id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    owner_name: Mapped[str] = mapped_column(String(200), nullable=False)
    target: Mapped[str] = mapped_column(String(220), nullable=False)  # channel:<id> | user:<id>
    text: Mapped[str] = mapped_column(Text, nullable=False)
    tz: Mapped[str] = mapped_column(String(64), nullable=False)
    cron: Mapped[str | None] = mapped_column(String(120), nullable=True)  # None: one-off
    next_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # active | done | cancelled
    source: Mapped[str] = mapped_column(String(64), nullable=False)  # user | llm | plugin:<name>
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(TS, nullable=False)


class Delivery(PluginBase):
    """One row per reminder occurrence (unique): claimed before sending, so an occurrence is
    never delivered twice — not across ticks, restarts or two hosts."""

    __tablename__ = table_name("reminders_deliveries")
    __table_args__ = (
        UniqueConstraint("reminder_id", "occurrence_at", name=table_name("uq_reminders_delivery_occurrence")),
        Index(table_name("ix_reminders_deliveries_owner"), "owner_id"),
    )

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    reminder_id: Mapped[int] = mapped_column(PK, nullable=False)
    owner_id: Mapped[str] = mapped_column(String(200), nullable=False)
    occurrence_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # claimed | sent | failed | skipped
    late: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    at: Mapped[datetime] = mapped_column(TS, nullable=False)


class Activity(PluginBase):
    """Per user: last interaction (from the "message" event) and the proactive loop's state."""

    __tablename__ = table_name("reminders_activity")

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False)
    last_message_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    last_channel_id: Mapped[str] = mapped_column(String(200), nullable=False)
    last_guild_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_is_dm: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    ignored_streak: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_assess_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


class Proactive(PluginBase):
    """Every proactive message sent: why, where, and whether the user engaged or ignored it."""

    __tablename__ = table_name("reminders_proactive")
    __table_args__ = (Index(table_name("ix_reminders_proactive_user"), "user_id", "sent_at"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200), nullable=False)
    target: Mapped[str] = mapped_column(String(220), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str | None] = mapped_column(String(200), nullable=True)  # what it was about (no repeats)
    sent_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # pending | engaged | ignored


class Note(PluginBase):
    """THINK: an observation kept for later; its relevance decays to 0 over ORS_NOTE_DECAY_DAYS."""

    __tablename__ = table_name("reminders_notes")
    __table_args__ = (Index(table_name("ix_reminders_notes_user"), "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False)


reminders = Reminder.__table__
deliveries = Delivery.__table__
activity = Activity.__table__
proactive = Proactive.__table__
notes = Note.__table__
ALL_TABLES = (deliveries, reminders, activity, proactive, notes)
