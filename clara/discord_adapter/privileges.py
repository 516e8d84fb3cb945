"""The privilege ladder: member < mod < admin < guild owner < bot owner.

Admin = Administrator, Manage Server, Manage Channels or a role named ``Clara-Admin``.

Computed from the real `discord.Member` (roles and permissions as Discord reports them), never
from ids parsed out of strings, and fail-closed: anything that is not a Member of the guild in
question (a bare User, a member of another guild, missing data) is a plain member, or nothing.
"""

from __future__ import annotations

import discord

from clara.discord_adapter.settings import DiscordSettings
from clara.plugin_api import Level

__all__ = ["ADMIN_ROLE", "Level", "privilege"]
ADMIN_ROLE = "Clara-Admin"  # a role with this name makes its members admins (as in the seed bot)


def privilege(
    user: discord.abc.User, guild: discord.Guild | None, settings: DiscordSettings, bot_owner_ids: frozenset[int]
) -> Level:
    """`user`'s level in `guild` (None = a DM: members only, unless bot owner)."""
    if user.id in bot_owner_ids or user.id in settings.discord_owner_ids:
        return Level.BOT_OWNER
    if guild is None or not isinstance(user, discord.Member) or user.guild.id != guild.id:
        return Level.MEMBER
    if guild.owner_id == user.id:
        return Level.GUILD_OWNER
    perms = user.guild_permissions
    # The seed bot's admins: Administrator, Manage Channels or a role named Clara-Admin (and Manage Server).
    if (
        perms.administrator
        or perms.manage_guild
        or perms.manage_channels
        or any(r.name.casefold() == ADMIN_ROLE.casefold() for r in user.roles)
    ):
        return Level.ADMIN
    if perms.manage_messages or any(r.id in settings.discord_mod_roles for r in user.roles):
        return Level.MOD
    return Level.MEMBER
