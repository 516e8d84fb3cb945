"""Commands and LLM tools of the reminders plugin."""

from __future__ import annotations

import re
from typing import Any

from clara.plugin_api import Invocation, Level, PluginError, Result

from . import proactive as P
from . import service as S
from . import timeparse as T

REMIND_USAGE = (
    "!remind me in 2 hours to call Anna · !remind me tomorrow 9:00 dentist · !remind dm at 18:00 take pills · "
    "!remind #channel every Monday 9:00 standup · !remind here cron 0 9 * * 1-5 stand up"
)


def here(inv: Invocation) -> str:
    return f"user:{inv.user_id}" if inv.is_dm else f"channel:{inv.channel_id}"


def parse_target(inv: Invocation, word: str) -> str | None:
    """me/here → where asked; dm → the user's DM; <#id> or #<id> → that channel (mods only unless
    it is this channel). None if `word` isn't a target."""
    w = word.strip().lower()
    if w in ("me", "here", "us"):
        return here(inv)
    if w in ("dm", "me-dm", "private"):
        return f"user:{inv.user_id}"
    m = re.fullmatch(r"<#(\d+)>|#(\d+)", w)
    if m:
        cid = m.group(1) or m.group(2)
        if cid != inv.channel_id and inv.level < Level.MOD:
            raise PluginError("reminders in another channel need mod rights — use !remind here … in that channel")
        return f"channel:{cid}"
    if w.startswith("#"):
        raise PluginError("mention the channel (type # and pick it) so I know which one you mean")
    return None


def describe(row: Any) -> str:
    when = T.local(
        row["next_at"] if isinstance(row, dict) else row.next_at, row["tz"] if isinstance(row, dict) else row.tz
    )
    cron = row["cron"] if isinstance(row, dict) else row.cron
    text = row["text"] if isinstance(row, dict) else row.text
    rid = row["id"] if isinstance(row, dict) else row.id
    target = row["target"] if isinstance(row, dict) else row.target
    where = "your DMs" if target.startswith("user:") else f"<#{target.split(':', 1)[1]}>"
    rep = f" (repeats {T.describe_cron(cron)})" if cron else ""
    return f"#{rid} {when}{rep} in {where}: {text}"


async def create_from_text(ctx, inv: Invocation, target: str, text: str, source: str, tz: str | None = None) -> dict:
    tz = tz or await S.user_tz(ctx, inv.user_id)
    spec = S.parse_spec(text, ctx.now(), tz)
    return await S.create(
        ctx, owner_id=inv.user_id, owner_name=inv.display_name, target=target, spec=spec, source=source, now=ctx.now()
    )


def register(ctx) -> None:
    @ctx.command("remind", help="Set a reminder (one-off or recurring, in your timezone).", usage=REMIND_USAGE)
    async def remind(inv: Invocation, args: str) -> Result:
        parts = args.strip().split(maxsplit=1)
        if not parts:
            raise PluginError("usage: " + REMIND_USAGE)
        target = parse_target(inv, parts[0])
        rest = parts[1] if target is not None and len(parts) > 1 else ("" if target is not None else args)
        target = target or here(inv)
        if not rest.strip():
            raise PluginError("when, and what should I remind you of? e.g. " + REMIND_USAGE.split(" · ")[0])
        row = await create_from_text(ctx, inv, target, rest, "user")
        return Result(f"Okay — reminder {describe(row)}")

    @ctx.command("reminders", help="Your reminders: list, cancel <id>, snooze <id> [10m|2h|1d].")
    async def reminders(inv: Invocation, args: str) -> Result:
        words = args.split()
        sub = words[0].lower() if words else "list"
        if sub == "list":
            rows = await S.list_active(ctx, inv.user_id)
            if not rows:
                return Result("You have no reminders. Set one with !remind me in 2 hours to …", private=True)
            return Result("\n".join(describe(r) for r in rows), private=True)
        if sub in ("cancel", "delete", "stop") and len(words) == 2:
            row = await S.cancel(ctx, inv.user_id, _id(words[1]), ctx.now())
            return Result(f"Cancelled reminder #{row.id}: {row.text}")
        if sub == "snooze" and len(words) in (2, 3):
            delta = T.parse_duration(words[2]) if len(words) == 3 else T.parse_duration("10m")
            row = await S.snooze(ctx, inv.user_id, _id(words[1]), delta, ctx.now())
            return Result(f"Snoozed — reminder {describe(row)}")
        raise PluginError("usage: !reminders · !reminders cancel <id> · !reminders snooze <id> [10m]")

    @ctx.command("timezone", help="Show or set your timezone (IANA name, e.g. Europe/Berlin).")
    async def timezone(inv: Invocation, args: str) -> Result:
        name = args.strip()
        if not name:
            return Result(f"Your timezone is {await S.user_tz(ctx, inv.user_id)}.")
        T.zone(name)
        await ctx.config.set(f"user:{inv.user_id}", "timezone", name)
        return Result(f"Timezone set to {name} (reminders you set from now on use it).")

    @ctx.command(
        "proactive",
        help="Let Clara reach out on her own: on | off | status | here | dm | quiet 22:00-08:00 | guild on|off",
    )
    async def proactive(inv: Invocation, args: str) -> Result:
        words = args.lower().split()
        user = f"user:{inv.user_id}"
        sub = words[0] if words else "status"
        if sub in ("on", "off"):
            await ctx.config.set(user, "proactive", sub == "on")
            if sub == "off":
                return Result("Okay — I won't message you unprompted (your reminders still work).")
            return Result("Okay — I may reach out when there's a real reason (never in your quiet hours).")
        if sub == "here":
            if inv.is_dm or inv.guild_id is None:
                await ctx.config.set(user, "proactive_where", "dm")
                return Result("I'll reach out in your DMs.")
            await ctx.config.set(user, "proactive_where", {"channel": inv.channel_id, "guild": inv.guild_id})
            ok = await ctx.config.get(f"guild:{inv.guild_id}", "proactive", False)
            extra = "" if ok else " (this server hasn't enabled proactive messages: an admin runs !proactive guild on)"
            return Result("I'll reach out in this channel" + extra + ".")
        if sub == "dm":
            await ctx.config.set(user, "proactive_where", "dm")
            return Result("I'll reach out in your DMs.")
        if sub == "quiet" and len(words) == 2:
            if words[1] in ("off", "none"):
                await ctx.config.set(user, "quiet", "")
                return Result("No quiet hours.")
            P.parse_quiet(words[1])
            await ctx.config.set(user, "quiet", words[1])
            return Result(f"Quiet hours set to {words[1]} (your local time).")
        if sub == "guild" and len(words) == 2 and words[1] in ("on", "off"):
            if inv.guild_id is None:
                raise PluginError("run this in a server")
            if inv.level < Level.ADMIN:
                raise PluginError("!proactive guild needs admin rights")
            await ctx.config.set(f"guild:{inv.guild_id}", "proactive", words[1] == "on")
            return Result(f"Proactive messages in this server: {words[1]}.")
        if sub == "status":
            on = await ctx.config.get(user, "proactive", False)
            quiet = await ctx.config.get(user, "quiet", None)
            glob = await P.enabled_globally(ctx)
            return Result(
                f"Proactive messages for you: {'on' if on else 'off'}"
                f"{'' if glob else ' (disabled on this bot)'}; quiet hours {quiet or '22:00-08:00 (default)'}; "
                f"timezone {await S.user_tz(ctx, inv.user_id)}.",
                private=True,
            )
        raise PluginError("usage: !proactive on|off|status|here|dm|quiet 22:00-08:00|guild on|off")

    @ctx.tool(
        "create_reminder",
        description=(
            "Set a reminder for the user (or, for other plugins, on the user's behalf). Give `when` for a one-off "
            "(natural language like 'in 2 hours', 'tomorrow 9:00', or ISO 8601; naive times are in the user's "
            "timezone) or `every` for a recurring one ('every Monday 9:00', 'every weekday at 7am', 'cron 0 9 * * 1')."
        ),
        parameters={
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": 1000, "description": "What to remind of"},
                "when": {"type": "string", "description": "One-off time"},
                "every": {"type": "string", "description": "Recurrence instead of `when`"},
                "where": {"type": "string", "enum": ["here", "dm"], "description": "Default: here"},
                "timezone": {"type": "string", "description": "IANA zone; default the user's"},
                "source": {"type": "string", "maxLength": 64, "description": "Who asks (e.g. plugin:invoices)"},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
    )
    async def create_reminder(inv: Invocation, args: dict[str, Any]) -> str:
        when, every = (args.get("when") or "").strip(), (args.get("every") or "").strip()
        if bool(when) == bool(every):
            raise PluginError("give exactly one of `when` (one-off) or `every` (recurring)")
        tz = args.get("timezone") or await S.user_tz(ctx, inv.user_id)
        text = T.clean_text(args["text"])
        if every:
            rec = T.parse_recurrence(every if every.lower().startswith(("every", "cron")) else f"every {every}")
            if rec is None:
                raise PluginError(f"can't read the recurrence {every!r}")
            spec = S.Spec(text, tz, cron=rec[0])
        else:
            spec = S.Spec(text, tz, when=T.parse_when(when, ctx.now(), tz))
        target = f"user:{inv.user_id}" if args.get("where") == "dm" else here(inv)
        row = await S.create(
            ctx,
            owner_id=inv.user_id,
            owner_name=inv.display_name,
            target=target,
            spec=spec,
            source=args.get("source") or "llm",
            now=ctx.now(),
        )
        return f"Reminder {describe(row)}"

    @ctx.tool(
        "list_reminders",
        description="The user's active reminders (id, next time in their timezone, text).",
        parameters={"type": "object", "properties": {}, "additionalProperties": False},
    )
    async def list_reminders(inv: Invocation, args: dict[str, Any]) -> str:
        rows = await S.list_active(ctx, inv.user_id)
        return "\n".join(describe(r) for r in rows) or "No active reminders."

    @ctx.tool(
        "cancel_reminder",
        description="Cancel one of the user's reminders by id.",
        parameters={
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
            "required": ["id"],
            "additionalProperties": False,
        },
    )
    async def cancel_reminder(inv: Invocation, args: dict[str, Any]) -> str:
        row = await S.cancel(ctx, inv.user_id, int(args["id"]), ctx.now())
        return f"Cancelled reminder #{row.id}: {row.text}"

    @ctx.on("message")
    async def on_message(inv: Invocation, text: str) -> None:
        await P.on_message(ctx, inv, T.utc(inv.now or ctx.now()))


def _id(word: str) -> int:
    word = word.lstrip("#")
    if not (word.isascii() and word.isdigit()):
        raise PluginError(f"{word[:40]!r} is not a reminder id (see !reminders)")
    if len(word) > 18:  # beyond any 64-bit id
        raise PluginError(f"you have no reminder #{word[:30]}… (see !reminders)")
    return int(word)
