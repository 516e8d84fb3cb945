"""Prefix commands of the core (`!remember`, `!recall`, …). Transports map their own command
syntax (e.g. Discord slash commands) onto these. Every command answers with a Reply — usage
errors included — and never raises for bad input."""

from __future__ import annotations

import json
import re
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import humanize

from clara.forget import export_filename, forget_user
from clara.labels import check_slug, current_first, importance_10, importance_from_10, outdated_note
from clara.memory import CORE, Where
from clara.messages import IncomingMessage, Reply
from clara.plugin_api import Level
from storage import StoreError
from storage.types import Fact, FactKind

if TYPE_CHECKING:
    from clara.chat import ChatEngine

PAGE = 10
EVERY_KIND = tuple(k.value for k in FactKind)
MAX_PAGE = 100_000  # pages of PAGE facts: far beyond any one person's memories, and far inside 64 bits
HELP = """Commands:
  !remember <text>     save something about you (private to you, recalled in any channel)
      options before the text: key=<key> (the same key again updates it, e.g.
      `!remember key=favourite-color Blue`), importance=<1-10>, --company (shared
      with everyone in this server: the company's memory)
  !recall <query>      show what I remember that matches (numbered, with age and scope)
  !memories [page]     list your memories, newest first
  !forget <n|#id>      forget item n of your last list, or the fact with id #id
  !about <name>        what I know about a person, place or thing
  !project [name|none] show, set or clear this conversation's active project
  !summary             summarise this conversation so far
  !export              all your memories as a JSON file
  !forgetme            erase everything I know about you (asks for confirmation)
  !context [text]      (admins) show the context I would assemble, with token counts
  !high|!mid|!low <message>   answer with that model tier (aliases !opus, !sonnet, !haiku, !fast)
  !help                this help
Anything else is a message: I store it and reply using what I remember."""


def _ascii_number(arg: str) -> bool:
    """ASCII digits only ("²" or "٣" are digits to str.isdigit but not to int())."""
    return arg.isascii() and arg.isdigit()


def _shown(arg: str, n: int = 30) -> str:
    """The user's argument echoed in a reply, shortened visibly if long."""
    return arg if len(arg) <= n else arg[:n] + "…"


def remember_options(arg: str) -> tuple[dict, str]:
    """Leading options of `!remember`: `--company`, `key=<key>` (or `slug=`), `importance=<1-10>`
    (in any order, before the text). Returns ({company?, slug?, importance?}, text); ValueError
    for a bad key or importance."""
    opts: dict = {}
    words = arg.split(" ")
    while words:
        w = words[0]
        low = w.lower()
        if low in ("--company", "--guild", "--server"):
            opts["company"] = True
        elif low.startswith(("key=", "slug=", "--key=", "--slug=")):
            opts["slug"] = check_slug(w.split("=", 1)[1])
        elif low.startswith(("importance=", "--importance=")):
            opts["importance"] = importance_from_10(w.split("=", 1)[1])
        elif w == "":
            pass
        else:
            break
        words.pop(0)
    return opts, " ".join(words).strip()


def _age(when: datetime, now: datetime) -> str:
    return humanize.naturaltime(now - when)


class Commands:
    def __init__(self, engine: ChatEngine):
        self.engine = engine
        self.memory = engine.memory
        self.store = engine.store

    async def run(self, msg: IncomingMessage, text: str, where: Where) -> Reply:
        parts = re.split(r"\s", text[1:], maxsplit=1)
        name, arg = parts[0].lower().strip(), (parts[1] if len(parts) > 1 else "").strip()
        handler = getattr(self, f"cmd_{name}", None) if name.isidentifier() else None
        if handler is None and self.engine.plugins is not None:
            res = await self.engine.plugins.run_command(self.engine.invocation(msg, where), name, arg)
            if res is not None:
                return Reply(res.text, error=res.error, files=list(res.files), private=res.private)
        if handler is None:
            return Reply(f"Unknown command `!{name[:30]}`. Type !help for the list.", error=True)
        return await handler(msg, arg, where)

    # ---------------------------------------------------------------- listings
    def numbered(self, msg: IncomingMessage, where: Where, facts: list[Fact]) -> list[str]:
        """Numbered lines for a listing (pair with `save_listing` so `!forget 2` means what the
        user saw)."""
        now = self.store.clock()
        out = []
        for i, f in enumerate(facts, 1):
            if f.scope_id == where.user:
                where_ = "you (private)"
            elif f.scope_id == where.company:
                where_ = "company"
            else:
                where_ = f.scope_id.replace("channel:", "#")
            note = outdated_note(f, now)
            said = _age(f.valid_from or f.created_at, now) + (f", {note}" if note else "")
            key = f", key `{f.slug}`" if f.slug and f.kind != "summary" else ""
            weight = f"importance {importance_10(f.importance)}/10"
            out.append(f"{i}. {f.content}  — {said}, {where_}, {weight}{key} [#{f.id}]")
        return out

    async def listing(self, msg: IncomingMessage, where: Where, head: str, facts: list[Fact]) -> Reply:
        await self.save_listing(msg, facts)
        return Reply("\n".join([head, *self.numbered(msg, where, facts)]))

    async def save_listing(self, msg: IncomingMessage, facts: list[Fact]) -> None:
        """Persist the ids of the list just shown (per user and channel)."""
        await self.store.settings.set(
            CORE, f"user:{msg.user_id}", f"listing:{msg.channel_id}"[:100], [f.id for f in facts]
        )

    # ---------------------------------------------------------------- memory commands
    async def cmd_help(self, msg, arg, where) -> Reply:
        text = HELP
        if self.engine.plugins is not None:
            cmds = sorted(self.engine.plugins.commands().values(), key=lambda c: c.name)
            if cmds:
                text += "\nPlugins:\n" + "\n".join(
                    f"  !{c.name} {c.usage}".rstrip() + f"   {c.help} ({c.plugin})" for c in cmds
                )
        return Reply(text)

    async def cmd_remember(self, msg, arg, where) -> Reply:
        usage = (
            "Usage: !remember [--company] [key=<key>] [importance=<1-10>] <text> — for example "
            "`!remember I'm allergic to peanuts`, `!remember key=favourite-color Blue` (the same key "
            "again updates that memory), `!remember --company key=tax-regime ProPyme General`."
        )
        try:
            opts, text = remember_options(arg)
        except ValueError as exc:
            return Reply(f"{exc}. {usage}", error=True)
        if not text:
            return Reply(usage, error=True)
        scope, whose = where.user, "private to you"
        if opts.get("company"):
            if where.company is None:
                return Reply(
                    "Company memories belong to a server: use `!remember --company …` in one of its channels "
                    "(in a DM there is no company). Nothing was stored.",
                    error=True,
                )
            scope, whose = where.company, "shared with everyone in this server"
        importance = opts.get("importance", 0.7)
        common = dict(
            kind="note", speaker=msg.display_name, entities=[(msg.display_name, "person")],
            created_by=msg.user_id, importance=importance, actor=msg.user_id,
        )  # fmt: skip
        slug = opts.get("slug")
        if slug is None:
            fid = await self.store.add(text, scope, **common)
            return Reply(f"Got it, I'll remember that (#{fid}, {whose}).", stored_fact_id=fid)
        fid, outcome = await self.store.upsert(slug, text, scope, **common)
        said = {
            "added": f"Got it, I'll remember that as `{slug}`",
            "updated": f"Updated `{slug}`: it is now “{_shown(text, 80)}”",
            "unchanged": f"I already remember exactly that as `{slug}`",
        }[outcome]
        return Reply(f"{said} (#{fid}, {whose}).", stored_fact_id=fid)

    async def cmd_recall(self, msg, arg, where) -> Reply:
        history = None
        flag, _, rest = arg.partition(" ")
        if flag in ("--all", "--superseded", "--history", "-a"):
            history, arg = True, rest.strip()
        if not arg:
            return Reply(
                "Usage: !recall [--all] <query> — for example `!recall where do I live`; "
                "`--all` includes what is no longer true.",
                error=True,
            )
        hits = await self.memory.recall(arg, where, k=PAGE, history=history)
        if not hits:
            return Reply("I don't remember anything about that.")
        self.store.note_access(h.fact.id for h in hits)
        return await self.listing(msg, where, f"What I recall about “{arg}”:", [h.fact for h in hits])

    async def cmd_memories(self, msg, arg, where) -> Reply:
        if arg and not _ascii_number(arg) or arg and not arg.strip("0"):
            return Reply("Usage: !memories [page number]", error=True)
        if len(arg) > 6 or int(arg or 1) > MAX_PAGE:  # int() of thousands of digits is refused too
            return Reply(f"There is no page {_shown(arg)} (pages go up to {MAX_PAGE:,} at most).", error=True)
        page = int(arg) if arg else 1
        facts = await self._own_facts(msg, where, page)
        if not facts:
            return Reply("I have no memories of you yet." if page == 1 else f"There is no page {page}.")
        return await self.listing(msg, where, f"Your memories (page {page}, newest first):", facts)

    async def _own_facts(self, msg: IncomingMessage, where: Where, page: int) -> list[Fact]:
        """The user's facts here, newest first: their private scope plus what they said in this
        channel (paged in SQL, so a busy channel cannot push them out of view)."""
        want = PAGE * page
        facts = await self.store.list_facts([where.user], limit=want)
        others = [s for s in where.readable if s != where.user and not s.startswith("user:")]
        if others:
            facts += await self.store.list_facts(others, created_by=msg.user_id, limit=want)
        facts.sort(key=lambda f: (f.created_at, f.id), reverse=True)
        return facts[(page - 1) * PAGE : want]

    async def cmd_forget(self, msg, arg, where) -> Reply:
        usage = "Usage: !forget <n> (item n of your last list) or !forget #<id>."
        if arg.startswith("#") and _ascii_number(arg[1:]):
            if len(arg) > 19:  # beyond any 64-bit id
                return Reply(f"I have no memory {_shown(arg)} that you can forget.", error=True)
            fid = int(arg[1:])
        elif _ascii_number(arg):
            listing = await self.store.settings.get(CORE, f"user:{msg.user_id}", f"listing:{msg.channel_id}"[:100], [])
            n = int(arg) if len(arg) <= 18 else 0
            if not 1 <= n <= len(listing):
                return Reply(f"There is no item {_shown(arg)} in your last list. {usage}", error=True)
            fid = listing[n - 1]
        else:
            return Reply(usage, error=True)
        try:
            fact = await self.store.get(fid, scopes=where.readable)
        except StoreError:
            return Reply(f"I have no memory #{fid} that you can forget.", error=True)
        if fact.scope_id != where.user and fact.created_by != msg.user_id:
            return Reply(f"Memory #{fid} isn't yours to forget.", error=True)
        if fact.status == "deleted":
            return Reply(f"Memory #{fid} is already forgotten.")
        await self.store.forget(fid, scopes=where.readable)
        return Reply(f"Forgotten: “{fact.content[:200]}” (#{fid}).")

    async def cmd_about(self, msg, arg, where) -> Reply:
        if not arg:
            return Reply("Usage: !about <name> — for example `!about Anna` or `!about my sister`.", error=True)
        name = arg
        if arg.lower().startswith("my "):
            name = f"{msg.display_name}'s {arg[3:]}"
        entities = await self.store.graph.resolve(where.readable, name)
        if not entities:
            return Reply(f"I don't know anything about “{arg[:80]}” yet.")
        ids = [e.id for e in entities]
        # The same name in another readable scope is the same thing to the person asking.
        names = {e.name for e in entities}
        for n in names:
            ids += [e.id for e in await self.store.graph.resolve(where.readable, n) if e.id not in ids]
        main = entities[0]
        lines = [f"{main.name} ({main.type})" + (f", also “{'”, “'.join(main.aliases[:4])}”" if main.aliases else "")]
        rels = await self.store.graph.relations(where.readable, ids)
        for r in rels[:8]:
            until = f" until {r.valid_to:%Y-%m-%d}" if r.valid_to else ""
            lines.append(f"• {r.source} {r.relation.replace('_', ' ')} {r.target}{until}")
        fact_ids = await self.store.graph.entity_fact_ids(where.readable, ids, limit=PAGE)
        facts = current_first(await self.store.get_many(fact_ids, scopes=where.readable), self.store.clock())
        if facts:
            await self.save_listing(msg, facts)
            lines += self.numbered(msg, where, facts)
        return Reply("\n".join(lines))

    # ---------------------------------------------------------------- conversation commands
    async def cmd_project(self, msg, arg, where) -> Reply:
        if not arg:
            if where.project_name:
                return Reply(f"The active project here is “{where.project_name}”. `!project none` clears it.")
            return Reply("No active project here. `!project <name>` sets one.")
        if arg.lower() in ("none", "off", "clear"):
            await self.memory.set_project(msg, None)
            return Reply("Active project cleared.")
        try:
            await self.memory.set_project(msg, arg)
        except ValueError as exc:
            return Reply(f"Usage: !project <name> — {exc}.", error=True)
        return Reply(f"Active project is now “{arg}”: decisions and plans said here are kept with it.")

    async def cmd_summary(self, msg, arg, where) -> Reply:
        recent = await self.store.recent_messages(where.conversation, 120)
        if not recent:
            return Reply("There is nothing to summarise here yet.")
        text = await self.memory.writer.summarize([(m["speaker"], m["content"], m["role"]) for m in recent])
        return Reply(f"Summary of the last {len(recent)} messages here:\n{text}")

    async def cmd_context(self, msg, arg, where) -> Reply:
        admins = {a.strip() for a in self.engine.settings.admin_users.split(",") if a.strip()}
        if not (msg.level >= Level.ADMIN or msg.user_id in admins):
            return Reply("!context is for admins (CLARA_ADMIN_USERS).", error=True)
        ctx = await self.memory.context(msg, arg or "(no message)", where, None)
        return Reply(ctx.render())

    # ---------------------------------------------------------------- user data
    async def cmd_export(self, msg, arg, where) -> Reply:
        data = await self.export_user(msg.user_id, where)
        if self.engine.plugins is not None:
            data["plugins"] = await self.engine.plugins.export_user_data(msg.user_id)
        blob = json.dumps(data, ensure_ascii=False, indent=1, default=str).encode()
        n = len(data["facts"])
        return Reply(f"Here are your {n} memories as JSON.", files=[(export_filename(msg.user_id), blob)], private=True)

    async def export_user(self, user_id: str, where: Where) -> dict:
        """Everything about one user: facts in their scope and facts they created elsewhere (all
        statuses, with history), their sessions and settings."""
        facts = await self._every_fact([where.user])
        others = [s for s in await self.store.readable_scopes(user_id) if s != where.user]
        if others:
            facts += await self._every_fact(others, created_by=user_id)
        sessions = await self.store.sessions.list_sessions(user_id, limit=1000)
        return {
            "user_id": user_id,
            "exported_at": self.store.clock().isoformat(),
            "facts": [
                {
                    "id": f.id,
                    "scope": f.scope_id,
                    "kind": f.kind,
                    "status": f.status,
                    "content": f.content,
                    "importance": f.importance,
                    "created_at": f.created_at,
                    "valid_from": f.valid_from,
                    "valid_to": f.valid_to,
                    "supersedes": f.supersedes_id,
                    "superseded_by": f.superseded_by_id,
                    "source_message_ids": f.source_message_ids,
                }
                for f in facts
            ],
            "sessions": [
                {
                    "id": s.id,
                    "channel": s.channel_id,
                    "started_at": s.started_at,
                    "closed_at": s.closed_at,
                    "messages": s.message_count,
                    "summary_fact_id": s.summary_fact_id,
                }
                for s in sessions
            ],
            "settings": await self.store.settings.export_target(where.user),
        }

    async def _every_fact(self, scopes: list[str], *, created_by: str | None = None, page: int = 500) -> list[Fact]:
        """All active and superseded facts of these scopes, paged through (no silent cap)."""
        out: list[Fact] = []
        while True:
            batch = await self.store.list_facts(
                scopes,
                statuses=("active", "superseded"),
                kinds=EVERY_KIND,  # records (tool executions) too: the export is everything
                created_by=created_by,
                limit=page,
                offset=len(out),
            )
            out += batch
            if len(batch) < page:
                return out

    async def cmd_forgetme(self, msg, arg, where) -> Reply:
        target = where.user
        if not arg:
            code = f"{secrets.randbelow(10**6):06d}"
            expires = self.store.clock() + timedelta(minutes=5)
            await self.store.settings.set(CORE, target, "forgetme_code", code, expires_at=expires)
            return Reply(
                "This erases everything I know about you — memories, messages, sessions, settings — and "
                f"cannot be undone. To confirm, send `!forgetme {code}` within 5 minutes."
            )
        expected = await self.store.settings.take(CORE, target, "forgetme_code")
        if expected is None or arg != expected:
            return Reply("That confirmation code is wrong or expired. Send `!forgetme` to get a new one.", error=True)
        done = await forget_user(self.store, msg.user_id, plugins=self.engine.plugins, writer=self.memory.writer)
        report = done.store
        quoted = ""
        if report.redacted:
            quoted = f" I also cut your words out of {report.redacted} other texts (replies, summaries)."
        return Reply(
            f"Done. I erased {report.facts} memories, {report.messages} messages and {report.entities} "
            f"entities about you.{quoted} I no longer know anything about you."
        )
