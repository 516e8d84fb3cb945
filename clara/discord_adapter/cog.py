"""Discord commands: the core's memory commands as hybrid commands (prefix `!` and slash), and
admin slash commands checked on the privilege ladder (fail-closed, on the real member object).

Results that reveal private memories are never posted in a guild channel: slash replies are
ephemeral there, prefix replies go to the caller's DMs.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from clara.discord_adapter.bot import MODES, NS
from clara.discord_adapter.privileges import Level
from clara.discord_adapter.split import split_message
from clara.messages import IncomingMessage, Reply

if TYPE_CHECKING:
    from clara.discord_adapter.bot import ClaraBot


async def send_reply(send, reply: Reply, **kw) -> None:
    """Send a core Reply through `send` (ctx.send, channel.send, followup.send): split for
    Discord, files on the last message."""
    chunks = split_message(reply.text) or ["(no reply)"]
    files = [discord.File(io.BytesIO(b), filename=n) for n, b in reply.files]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        await send(chunk, files=files if last and files else discord.utils.MISSING, **kw)


PRIVATE = {"recall", "memories", "export", "forgetme", "about", "context"}


class MemoryCog(commands.Cog, name="Memory"):
    def __init__(self, bot: ClaraBot):
        self.bot = bot
        self.engine = bot.engine
        self.store = bot.store

    # ------------------------------------------------------------------ plumbing
    def _incoming(self, ctx: commands.Context, text: str) -> IncomingMessage:
        msg = ctx.message
        return IncomingMessage(
            user_id=str(ctx.author.id),
            display_name=getattr(ctx.author, "display_name", ctx.author.name),
            channel_id=str(ctx.channel.id),
            text=text,
            is_dm=ctx.guild is None,
            guild_id=str(ctx.guild.id) if ctx.guild else None,
            external_id=str(msg.id) if msg and not ctx.interaction else None,
            level=int(self.bot.level(ctx.author, ctx.guild)),
        )

    async def _run(self, ctx: commands.Context, name: str, arg: str = "") -> None:
        private = name in PRIVATE and ctx.guild is not None
        if ctx.interaction:
            await ctx.defer(ephemeral=private)
        reply = await self.engine.handle(self._incoming(ctx, f"!{name} {arg}".strip()))
        await self._deliver(ctx, reply, private)

    async def _deliver(self, ctx: commands.Context, reply: Reply, private: bool) -> None:
        if ctx.interaction:
            await send_reply(ctx.send, reply, ephemeral=private)
            return
        target = ctx
        if private:
            target = ctx.author.dm_channel or await ctx.author.create_dm()
            await ctx.reply("I've sent you the answer in a DM (it includes private memories).", mention_author=False)
        await send_reply(target.send, reply)

    # ------------------------------------------------------------------ hybrid memory commands
    @commands.hybrid_command(description="Save something about you (private to you).")
    @app_commands.describe(text="What to remember")
    async def remember(self, ctx: commands.Context, *, text: str) -> None:
        await self._run(ctx, "remember", text)

    @commands.hybrid_command(description="Show what Clara remembers that matches.")
    async def recall(self, ctx: commands.Context, *, query: str) -> None:
        await self._run(ctx, "recall", query)

    @commands.hybrid_command(description="Forget item n of your last list, or #id.")
    async def forget(self, ctx: commands.Context, item: str) -> None:
        await self._run(ctx, "forget", item)

    @commands.hybrid_command(description="List your memories, newest first.")
    async def memories(self, ctx: commands.Context, page: int = 1) -> None:
        await self._run(ctx, "memories", str(page))

    @commands.hybrid_command(description="Erase everything Clara knows about you (asks for a code).")
    async def forgetme(self, ctx: commands.Context, code: str = "") -> None:
        await self._run(ctx, "forgetme", code)

    @commands.hybrid_command(description="Your memories as a JSON file.")
    async def export(self, ctx: commands.Context) -> None:
        await self._run(ctx, "export")

    @commands.hybrid_command(description="What Clara knows about a person, place or thing.")
    async def about(self, ctx: commands.Context, *, name: str) -> None:
        await self._run(ctx, "about", name)

    @commands.hybrid_command(description="(admins) The context Clara would assemble, with token counts.")
    async def context(self, ctx: commands.Context, *, text: str = "") -> None:
        await self._run(ctx, "context", text)

    async def _tier(self, ctx: commands.Context, tier: str, message: str) -> None:
        if ctx.interaction:
            await ctx.defer()
        reply = await self.engine.handle(self._incoming(ctx, f"!{tier} {message}"))
        await self._deliver(ctx, reply, private=False)

    @commands.hybrid_command(description="Answer with the high model tier.", aliases=["opus"])
    async def high(self, ctx: commands.Context, *, message: str) -> None:
        await self._tier(ctx, "high", message)

    @commands.hybrid_command(description="Answer with the mid model tier.", aliases=["sonnet"])
    async def mid(self, ctx: commands.Context, *, message: str) -> None:
        await self._tier(ctx, "mid", message)

    @commands.hybrid_command(description="Answer with the low model tier.", aliases=["haiku", "fast"])
    async def low(self, ctx: commands.Context, *, message: str) -> None:
        await self._tier(ctx, "low", message)

    async def cog_command_error(self, ctx: commands.Context, error: Exception) -> None:
        if isinstance(error, commands.UserInputError):
            await ctx.send(f"Usage: !{ctx.command.qualified_name} {ctx.command.signature}")
        else:
            raise error

    # ------------------------------------------------------------------ admin slash commands
    memory = app_commands.Group(name="memory", description="Memory administration", guild_only=True)
    channel = app_commands.Group(name="channel", description="Channel settings", guild_only=True)

    async def _require(self, interaction: discord.Interaction, level: Level) -> bool:
        have = self.bot.level(interaction.user, interaction.guild)
        if have < level:
            await interaction.response.send_message(
                f"You need to be {level.name.lower().replace('_', ' ')} or higher for that.", ephemeral=True
            )
            return False
        return True

    def _guild_scopes(self, guild: discord.Guild) -> list[str]:
        return [f"channel:{c.id}" for c in guild.text_channels]

    @memory.command(name="stats", description="How much Clara remembers in this server.")
    async def memory_stats(self, interaction: discord.Interaction) -> None:
        if not await self._require(interaction, Level.ADMIN):
            return
        scopes = self._guild_scopes(interaction.guild)
        active = await self.store.count_facts(scopes)
        all_ = await self.store.count_facts(scopes, ("active", "superseded", "deleted"))
        pending = await self.store.jobs.count()
        await interaction.response.send_message(
            f"This server: {active} active memories ({all_ - active} superseded or forgotten) in "
            f"{len(scopes)} channels; background queue: {pending} pending.",
            ephemeral=True,
        )

    @memory.command(name="search", description="Search this server's channel memories.")
    async def memory_search(self, interaction: discord.Interaction, query: str) -> None:
        if not await self._require(interaction, Level.MOD):
            return
        await interaction.response.defer(ephemeral=True)
        hits = await self.store.recall(query, self._guild_scopes(interaction.guild), k=10, bump=False)
        lines = [f"[#{h.fact.id}] {h.fact.content[:180]}" for h in hits] or ["Nothing found."]
        for chunk in split_message("\n".join(lines)):
            await interaction.followup.send(chunk, ephemeral=True)

    @memory.command(name="forget-user", description="Erase what a member said in this server.")
    async def memory_forget_user(self, interaction: discord.Interaction, member: discord.Member) -> None:
        if not await self._require(interaction, Level.ADMIN):
            return
        await interaction.response.defer(ephemeral=True)
        report = await self.store.erase_user_in(str(member.id), self._guild_scopes(interaction.guild))
        await interaction.followup.send(
            f"Erased {report.facts} memories and {report.messages} messages of {member.display_name} in this "
            "server. (Their private memories are theirs: `/forgetme` erases those.)",
            ephemeral=True,
        )

    @memory.command(name="export-user", description="What Clara remembers from a member in this server (JSON).")
    async def memory_export_user(self, interaction: discord.Interaction, member: discord.Member) -> None:
        if not await self._require(interaction, Level.ADMIN):
            return
        await interaction.response.defer(ephemeral=True)
        facts = await self.store.list_facts(
            self._guild_scopes(interaction.guild),
            created_by=str(member.id),
            statuses=("active", "superseded"),
            limit=100_000,
        )
        data = [
            {
                "id": f.id,
                "scope": f.scope_id,
                "kind": f.kind,
                "status": f.status,
                "content": f.content,
                "created_at": f.created_at.isoformat(),
            }
            for f in facts
        ]
        blob = json.dumps({"user_id": str(member.id), "facts": data}, ensure_ascii=False, indent=1).encode()
        await interaction.followup.send(
            f"{len(data)} memories.", file=discord.File(io.BytesIO(blob), f"export-{member.id}.json"), ephemeral=True
        )

    @channel.command(name="mode", description="When Clara replies in this channel.")
    async def channel_mode(self, interaction: discord.Interaction, mode: Literal["mention", "active", "off"]) -> None:
        if not await self._require(interaction, Level.ADMIN):
            return
        if mode not in MODES:
            await interaction.response.send_message(f"Mode must be one of {', '.join(MODES)}.", ephemeral=True)
            return
        await self.store.settings.set(NS, f"channel:{interaction.channel_id}", "mode", mode)
        await interaction.response.send_message(f"Reply mode for this channel is now **{mode}**.")


class PluginCommands(commands.Cog, name="Plugins"):
    """`/plugins list|enable|disable` (per guild, admins) and every plugin command as a slash
    command with one free-text `args` option (the prefix form `!name args` works through the chat
    pipeline). Privilege levels and per-guild switches are checked by the plugin host."""

    plugins_group = app_commands.Group(name="plugins", description="Plugins in this server", guild_only=True)

    def __init__(self, bot: ClaraBot):
        self.bot = bot
        self.host = bot.engine.plugins
        for cmd in self.host.commands().values():
            bot.tree.add_command(self._slash(cmd))

    def _slash(self, cmd) -> app_commands.Command:
        async def callback(interaction: discord.Interaction, args: str = "") -> None:
            await interaction.response.defer(ephemeral=interaction.guild is not None)
            msg = IncomingMessage(
                user_id=str(interaction.user.id),
                display_name=getattr(interaction.user, "display_name", interaction.user.name),
                channel_id=str(interaction.channel_id),
                text=f"!{cmd.name} {args}".strip(),
                is_dm=interaction.guild is None,
                guild_id=str(interaction.guild_id) if interaction.guild_id else None,
                level=int(self.bot.level(interaction.user, interaction.guild)),
            )
            reply = await self.bot.engine.handle(msg)
            await send_reply(interaction.followup.send, reply, ephemeral=interaction.guild is not None)

        return app_commands.Command(name=cmd.name, description=(cmd.help or cmd.name)[:100], callback=callback)

    async def _admin(self, interaction: discord.Interaction) -> bool:
        if self.bot.level(interaction.user, interaction.guild) < Level.ADMIN:
            await interaction.response.send_message("You need to be admin or higher for that.", ephemeral=True)
            return False
        return True

    @plugins_group.command(name="list", description="Plugins and whether they are on here.")
    async def plugins_list(self, interaction: discord.Interaction) -> None:
        if not await self._admin(interaction):
            return
        lines = []
        for p in self.host.plugins():
            on = await self.host.enabled(p.name, str(interaction.guild_id))
            state = "on" if on else ("off here" if p.status == "loaded" else p.status)
            lines.append(f"• **{p.name}** {p.version} — {state}: {p.description} _Data: {p.data_statement}_")
        await interaction.response.send_message("\n".join(lines) or "No plugins.", ephemeral=True)

    @plugins_group.command(name="enable", description="Turn a plugin on in this server.")
    async def plugins_enable(self, interaction: discord.Interaction, name: str) -> None:
        await self._switch(interaction, name, True)

    @plugins_group.command(name="disable", description="Turn a plugin off in this server.")
    async def plugins_disable(self, interaction: discord.Interaction, name: str) -> None:
        await self._switch(interaction, name, False)

    async def _switch(self, interaction: discord.Interaction, name: str, on: bool) -> None:
        if not await self._admin(interaction):
            return
        from clara.plugin_api import PluginError

        try:
            await self.host.set_enabled(name, str(interaction.guild_id), on)
        except PluginError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.send_message(
            f"Plugin **{name}** is now {'on' if on else 'off'} in this server.", ephemeral=True
        )
