"""Clara on Discord end to end: the real discord.py client against the in-repo fake Discord
(REST + gateway on 127.0.0.1) and the real openai client against the LLM stub."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

discord = pytest.importorskip("discord")

from clara.chat import ChatEngine, IncomingMessage  # noqa: E402
from clara.discord_adapter.bot import ClaraBot  # noqa: E402
from clara.discord_adapter.settings import DiscordSettings  # noqa: E402
from clara.llm import OpenAICompatProvider  # noqa: E402
from clara.settings import Settings  # noqa: E402
from tests.conftest import assert_private  # noqa: E402
from tests.fake_discord import FakeDiscord  # noqa: E402
from tests.llm_stub import LLMStub, Reply, last_user_text  # noqa: E402

pytestmark = pytest.mark.timeout(60)
OWNER, ALICE, BOB, ADA = 1001, 1002, 1003, 1004


@pytest.fixture
def backend():
    return "sqlite"  # the adapter is storage-agnostic; the store runs on both in its own tests


class Model:
    """The LLM peer: chat requests answer "You said: …" unless replies are queued."""

    def __init__(self):
        self.chat: list[Reply] = []

    def __call__(self, body):
        if body.get("tools"):
            if self.chat:
                return self.chat.pop(0)
            return Reply(text=f"You said: {last_user_text(body)[-200:]}")
        if body.get("response_format"):
            return Reply(text='{"facts": []}')
        return Reply(text="A short summary.")


@dataclass
class World:
    fake: FakeDiscord
    bot: ClaraBot
    stub: LLMStub
    model: Model
    engine: ChatEngine
    guild: object
    general: object
    random: object


async def _world(store, tmp_path, plugins=None, **discord_settings):
    model = Model()
    stub = LLMStub(responder=model).start()
    llm = OpenAICompatProvider(base_url=stub.base_url, api_key="k", model="chat-model", timeout=10, max_retries=0)
    engine = ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=tmp_path), plugins=plugins)
    fake = FakeDiscord(token="t", app_owner_id=OWNER)
    await fake.start()
    guild = fake.add_guild("Home", owner_id=OWNER)
    general = fake.add_channel(guild, "general")
    random = fake.add_channel(guild, "random")
    admin = fake.add_role(guild, "Admin", permissions=discord.Permissions(administrator=True).value)
    fake.add_member(guild, ALICE, "alice")
    fake.add_member(guild, BOB, "bob")
    fake.add_member(guild, ADA, "ada", roles=[admin])
    patch = fake.patch_discord()
    bot = ClaraBot(engine, DiscordSettings(discord_edit_interval=0.05, **discord_settings))
    running = fake.running(bot)
    await running.__aenter__()

    async def close():
        await running.__aexit__(None, None, None)
        patch.restore()
        await fake.close()
        await engine.aclose()
        await llm.aclose()
        stub.stop()

    return World(fake, bot, stub, model, engine, guild, general, random), close


@pytest.fixture
async def world(store, tmp_path):
    w, close = await _world(store, tmp_path)
    yield w
    await close()


def contents(fake, channel) -> list[str]:
    return [m["content"] for m in fake.sent(channel)]


async def test_mention_gets_a_streamed_reply_and_plain_messages_are_ignored(world):
    fake = world.fake
    world.model.chat.append(Reply(text=" ".join(f"word{i}" for i in range(40)), chunk_delay=0.01))
    asked = await fake.post_message(world.general, ALICE, "tell me something", mentions_bot=True)
    reply = await fake.wait_for_message(world.general, lambda m: m["content"].endswith("word39"), after=asked)
    assert len(fake.edits(reply["id"])) >= 1  # streamed: shown early, then edited
    assert reply.get("message_reference", {}).get("message_id") == str(asked["id"])
    # Mention-only mode: a message without a mention gets no answer.
    quiet = await fake.post_message(world.general, BOB, "just chatting")
    await asyncio.sleep(0.3)
    assert all(int(m["id"]) < int(quiet["id"]) for m in fake.sent(world.general))
    # A DM is always answered.
    dm = fake.dm_channel(BOB)
    await fake.post_message(dm, BOB, "hello in private")
    got = await fake.wait_for_message(dm, lambda m: "hello in private" in m["content"])
    assert got["content"].startswith("You said:")


async def test_remember_then_recall_elsewhere_respects_scopes(world, store):
    fake = world.fake
    await fake.post_message(world.general, ALICE, "!remember my locker code is 7731")
    await fake.wait_for_message(world.general, lambda m: "remember that" in m["content"])
    # Alice in another channel: the answer goes to her DMs (private memories are never posted).
    await fake.post_message(world.random, ALICE, "!recall locker code")
    await fake.wait_for_message(world.random, lambda m: "DM" in m["content"])
    dm = fake.dm_channel(ALICE)
    found = await fake.wait_for_message(dm, lambda m: "7731" in m["content"])
    assert "locker code" in found["content"]
    # Bob never sees it, by prefix or slash command.
    await fake.post_message(world.general, BOB, "!recall locker code")
    bob_dm = fake.dm_channel(BOB)
    answer = await fake.wait_for_message(bob_dm, lambda m: "remember" in m["content"])
    assert "7731" not in answer["content"]
    interaction = await fake.invoke_slash(world.general, BOB, "recall", {"query": "locker code"})
    await interaction.wait_done()
    assert all("7731" not in (m.get("content") or "") for m in interaction.messages)
    assert interaction.ephemeral
    await assert_private(store, "locker code 7731", str(BOB), f"user:{ALICE}")
    # !about shows private memories too: answered by DM, never in the channel.
    await fake.post_message(world.general, ALICE, "!about alice")
    await fake.wait_for_message(world.general, lambda m: "DM" in m["content"])
    assert not any("7731" in c for c in contents(fake, world.general))


async def test_stop_phrase_cancels_the_running_reply_and_clears_the_queue(world):
    fake = world.fake
    world.model.chat.append(Reply(text=" ".join(f"slow{i}" for i in range(200)), chunk_delay=0.05))
    first = await fake.post_message(world.general, ALICE, "write a long story", mentions_bot=True)
    await fake.wait_for_message(world.general, lambda m: "slow3" in m["content"], after=first)
    await fake.post_message(world.general, ALICE, "and another one", mentions_bot=True)  # queued
    await fake.post_message(world.general, ALICE, "clara stop")
    await fake.wait_for_message(world.general, lambda m: m["content"] == "Stopped.")
    stopped = await fake.wait_for_message(world.general, lambda m: "(stopped)" in m["content"], after=first)
    assert "slow199" not in stopped["content"]
    await asyncio.sleep(0.5)
    assert not any("another one" in c for c in contents(fake, world.general))  # the queue was dropped


async def test_long_reply_is_split_without_breaking_code_fences(world):
    fake = world.fake
    code = "```python\n" + "\n".join(f"print('line {i}')" for i in range(200)) + "\n```"
    world.model.chat.append(Reply(text="Here you go.\n\n" + code + "\n\nThat's all."))
    asked = await fake.post_message(world.general, ALICE, "code please", mentions_bot=True)
    await fake.wait_for_message(world.general, lambda m: "That's all." in m["content"], after=asked)
    parts = [m["content"] for m in fake.sent(world.general) if int(m["id"]) > int(asked["id"])]
    assert len(parts) >= 2 and all(len(p) <= 2000 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert sum(p.count("print('line") for p in parts) == 200


async def test_admin_slash_commands_and_fail_closed_privileges(world):
    fake = world.fake
    done = await fake.invoke_slash(world.general, ADA, "memory", {}, subcommand="stats")
    await done.wait_done()
    assert "active memories" in done.messages[0]["content"]
    refused = await fake.invoke_slash(world.general, BOB, "memory", {}, subcommand="stats")
    await refused.wait_done()
    assert "need to be admin" in refused.messages[0]["content"]
    # /channel mode is read where it matters: active mode answers without a mention, off ignores.
    refused = await fake.invoke_slash(world.general, BOB, "channel", {"mode": "active"}, subcommand="mode")
    await refused.wait_done()
    assert "need to be admin" in refused.messages[0]["content"]
    ok = await fake.invoke_slash(world.general, ADA, "channel", {"mode": "active"}, subcommand="mode")
    await ok.wait_done()
    msg = await fake.post_message(world.general, BOB, "no mention needed now")
    await fake.wait_for_message(world.general, lambda m: "no mention needed" in m["content"], after=msg)
    ok = await fake.invoke_slash(world.general, ADA, "channel", {"mode": "off"}, subcommand="mode")
    await ok.wait_done()
    msg = await fake.post_message(world.general, BOB, "hello?", mentions_bot=True)
    await asyncio.sleep(0.4)
    assert all(int(m["id"]) < int(msg["id"]) for m in fake.sent(world.general))


async def test_manage_channels_and_clara_admin_role_are_admins(world):
    """The seed's MCP admins: Administrator, Manage Channels, or a role named Clara-Admin."""
    fake, guild = world.fake, world.guild
    chan = fake.add_role(guild, "Channel keeper", permissions=discord.Permissions(manage_channels=True).value)
    named = fake.add_role(guild, "Clara-Admin")
    keeper, tagged = 1005, 1006
    fake.add_member(guild, keeper, "keeper", roles=[chan])
    fake.add_member(guild, tagged, "tagged", roles=[named])
    await asyncio.sleep(0.2)
    for who in (keeper, tagged):
        done = await fake.invoke_slash(world.general, who, "memory", {}, subcommand="stats")
        await done.wait_done()
        assert "active memories" in done.messages[0]["content"], who
    refused = await fake.invoke_slash(world.general, BOB, "memory", {}, subcommand="stats")
    await refused.wait_done()
    assert "need to be admin" in refused.messages[0]["content"]


async def test_allow_lists_are_respected(store, tmp_path):
    w, close = await _world(store, tmp_path)
    try:
        w.bot.dsettings = DiscordSettings(discord_edit_interval=0.05, discord_allowed_channels=str(w.random.id))
        ignored = await w.fake.post_message(w.general, ALICE, "anyone there?", mentions_bot=True)
        answered = await w.fake.post_message(w.random, ALICE, "anyone here?", mentions_bot=True)
        await w.fake.wait_for_message(w.random, lambda m: "anyone here" in m["content"], after=answered)
        assert all(int(m["id"]) < int(ignored["id"]) for m in w.fake.sent(w.general))
        role = w.fake.add_role(w.guild, "Friends")
        w.bot.dsettings = DiscordSettings(discord_edit_interval=0.05, discord_allowed_roles=str(role.id))
        ignored = await w.fake.post_message(w.random, BOB, "me too?", mentions_bot=True)
        await asyncio.sleep(0.4)
        assert all(int(m["id"]) < int(ignored["id"]) for m in w.fake.sent(w.random))
    finally:
        await close()


async def test_reply_chain_reaches_the_prompt(world):
    fake = world.fake
    first = await fake.post_message(world.general, BOB, "The deploy key rotates every Tuesday")
    asked = await fake.post_message(
        world.general, ALICE, "what day was that again?", mentions_bot=True, reply_to=first["id"]
    )
    await fake.wait_for_message(world.general, lambda m: "what day" in m["content"], after=asked)
    chat = [r for r in world.stub.requests if r.get("tools")][-1]
    prompt = "\n".join(str(m.get("content")) for m in chat["messages"])
    assert "The deploy key rotates every Tuesday" in prompt


async def test_clara_bot_process_answers_and_stops_gracefully_on_sigterm(tmp_path):
    """`clara bot` as a real process against the fake: logs in, answers a mention, and exits 0
    on SIGTERM."""
    import os
    import signal
    import sys

    async with FakeDiscord(token="proc-token", app_owner_id=OWNER) as fake:
        guild = fake.add_guild("Home", owner_id=OWNER)
        general = fake.add_channel(guild, "general")
        logs = fake.add_channel(guild, "bot-logs")
        fake.add_member(guild, ALICE, "alice")
        env = {
            **os.environ,
            "CLARA_DATA_DIR": str(tmp_path),
            "DISCORD_BOT_TOKEN": "proc-token",
            "DISCORD_LOG_CHANNEL_ID": str(logs.id),
            "MAINTENANCE_RERANK": "off",
            "DISCORD_API_BASE": fake.api_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "LLM_PROVIDER": "none",
            "DISCORD_MONITOR_PORT": str(dash_port := _free_port()),
        }
        env.pop("DATABASE_URL", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clara.cli",
            "bot",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await fake.wait_until_connected(timeout=40)
            await asyncio.sleep(0.5)
            asked = await fake.post_message(general, ALICE, "I keep bees on my roof", mentions_bot=True)
            reply = await fake.wait_for_message(general, after=asked, timeout=30)
            assert "stored" in reply["content"]  # memory-only mode says so plainly
            import httpx

            async with httpx.AsyncClient() as client:  # the bot process serves the dashboard too
                health = await client.get(f"http://127.0.0.1:{dash_port}/healthz", timeout=10)
                assert health.status_code == 200
                assert (await client.get(f"http://127.0.0.1:{dash_port}/memories", timeout=10)).status_code in (
                    303,
                    401,
                )  # nothing readable without login
            await fake.wait_for_message(logs, lambda m: "🟢 Clara started" in m["content"], timeout=10)
            # The bot's persisted scheduler holds the maintenance jobs (rerank turned off by its setting).
            import sqlite3

            with sqlite3.connect(tmp_path / "clara.db") as db:
                jobs = {r[0] for r in db.execute("SELECT id FROM scheduler_jobs")}
            assert {"core:decay", "core:cleanup"} <= jobs and "core:rerank" not in jobs
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            assert any("🔴 Clara shutting down" in m["content"] for m in fake.sent(logs))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_attachments_export_file_and_proactive_send(world):
    fake = world.fake
    asked = await fake.post_message(
        world.general,
        ALICE,
        "summarise this file",
        mentions_bot=True,
        attachments=[("notes.txt", b"Quarterly goal: ship the ledger by March.")],
    )
    await fake.wait_for_message(world.general, lambda m: "summarise" in m["content"], after=asked)
    chat = [r for r in world.stub.requests if r.get("tools")][-1]
    assert "Quarterly goal: ship the ledger by March." in str(chat["messages"][-1]["content"])
    # !export answers in DMs with a JSON file.
    await fake.post_message(world.general, ALICE, "!export")
    dm = fake.dm_channel(ALICE)
    with_file = await fake.wait_for_message(dm, lambda m: bool(m.get("attachments")))
    blob = fake.read_attachment(with_file["attachments"][0])
    assert b'"facts"' in blob
    # Proactive messages: one API for channels and DMs.
    await world.bot.send(f"channel:{world.random.id}", "Reminder: standup in 5 minutes")
    await fake.wait_for_message(world.random, lambda m: m["content"] == "Reminder: standup in 5 minutes")
    await world.bot.send(f"user:{BOB}", "x" * 4100)
    bob = [m["content"] for m in fake.sent(fake.dm_channel(BOB))]
    assert len(bob) == 3 and all(len(c) <= 2000 for c in bob)
    with pytest.raises(ValueError):
        await world.bot.send("guild:1", "nope")
    await world.bot.store.settings.set("discord", f"channel:{world.random.id}", "mode", "off")
    with pytest.raises(PermissionError):
        await world.bot.send(f"channel:{world.random.id}", "not in an off channel")


async def test_plugins_commands_and_per_guild_switch(store, tmp_path):
    from clara.plugin_host import PluginHost

    host = PluginHost(store, packages="tests.plugin_fixtures")
    await host.load_all()
    w, close = await _world(store, tmp_path, plugins=host)
    try:
        fake = w.fake
        listing = await fake.invoke_slash(w.general, ADA, "plugins", {}, subcommand="list")
        await listing.wait_done()
        text = listing.messages[0]["content"]
        assert "notes" in text and "broken" in text and "failed" in text
        refused = await fake.invoke_slash(w.general, BOB, "plugins", {"name": "notes"}, subcommand="disable")
        await refused.wait_done()
        assert "need to be admin" in refused.messages[0]["content"]
        # A plugin command as a slash command (ephemeral in a server), and by prefix.
        note = await fake.invoke_slash(w.general, ALICE, "note", {"args": "water the ficus"})
        await note.wait_done()
        assert note.messages[-1]["content"] == "noted (1)" and note.ephemeral
        await fake.post_message(w.general, ALICE, "!note feed the cat")
        await fake.wait_for_message(w.general, lambda m: m["content"] == "noted (2)")
        off = await fake.invoke_slash(w.general, ADA, "plugins", {"name": "notes"}, subcommand="disable")
        await off.wait_done()
        await fake.post_message(w.general, ALICE, "!note one more")
        await fake.wait_for_message(w.general, lambda m: "disabled here" in m["content"])
        # Its proactive send goes through the adapter.
        assert await host.loaded["notes"].ctx.send(f"channel:{w.random.id}", "plugin says hi")
        await fake.wait_for_message(w.random, lambda m: m["content"] == "plugin says hi")
        history = await store.recent_messages(f"channel:{w.random.id}", 5)  # written into the conversation
        assert [(m["role"], m["content"]) for m in history] == [("assistant", "plugin says hi")]
    finally:
        await close()
        await host.aclose()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_files_plugin_keeps_attachments_and_serves_them(store, tmp_path, monkeypatch):
    """Local file storage (plugins/files): a Discord attachment is saved in the sender's folder, the
    model lists/reads/saves/sends/deletes through tools, names cannot escape the folder, !export
    lists the files and !forgetme erases them."""
    import json

    from clara.plugin_host import PluginHost
    from plugins.files import user_dir

    root = tmp_path / "user-files"
    monkeypatch.setenv("CLARA_FILES_DIR", str(root))
    monkeypatch.setenv("CLARA_MAX_FILE_SIZE", "5000")
    host = PluginHost(store, packages="plugins")
    assert (await host.load("files")).ok
    w, close = await _world(store, tmp_path, plugins=host)
    try:
        fake, model = w.fake, w.model
        png = b"\x89PNG\r\n\x1a\n\x00\x00binary" * 10
        asked = await fake.post_message(
            w.general, ALICE, "keep these", mentions_bot=True, attachments=[("cat.png", png), ("todo.txt", b"buy milk")]
        )
        await fake.wait_for_message(w.general, lambda m: "keep these" in m["content"], after=asked, timeout=30)
        folder = user_dir(root.resolve(), str(ALICE))
        assert (folder / "cat.png").read_bytes() == png and (folder / "todo.txt").read_bytes() == b"buy milk"
        big = await fake.post_message(w.general, BOB, "huge", mentions_bot=True, attachments=[("big.bin", b"x" * 6000)])
        await fake.wait_for_message(w.general, lambda m: "huge" in m["content"], after=big, timeout=30)
        assert not user_dir(root.resolve(), str(BOB)).exists()  # over CLARA_MAX_FILE_SIZE: not kept

        def results(n):
            chat = [r for r in w.stub.requests if r.get("tools")]
            return [m["content"] for m in chat[-1]["messages"] if m["role"] == "tool"][-n:]

        async def turn(text, *calls, author=ALICE):
            if calls:  # all calls in one model step
                model.chat.append(
                    Reply(tool_calls=[{"name": n, "arguments": a, "id": f"c{i}"} for i, (n, a) in enumerate(calls)])
                )
            model.chat.append(Reply(text=f"done: {text}"))
            msg = await fake.post_message(w.general, author, text, mentions_bot=True)
            return await fake.wait_for_message(
                w.general, lambda m: m["content"] == f"done: {text}", after=msg, timeout=30
            )

        await turn(
            "look",
            ("list_local_files", {}),
            ("read_local_file", {"filename": "todo.txt"}),
            ("read_local_file", {"filename": "cat.png"}),
            ("read_local_file", {"filename": "../../clara.db"}),
            ("read_local_file", {"filename": "nope.txt"}),
        )
        listing, todo, binary, escape, missing = results(5)
        assert "cat.png" in listing and "todo.txt" in listing
        assert todo == "buy milk"
        assert binary.startswith("error:") and "binary" in binary
        assert escape.startswith("error:") and "plain file name" in escape
        assert missing.startswith("error:") and "no saved file" in missing
        # Bob sees none of Alice's files.
        await turn("bob looks", ("list_local_files", {}), ("read_local_file", {"filename": "todo.txt"}), author=BOB)
        assert results(2)[0] == "No saved files." and results(2)[1].startswith("error:")
        # Save, then send: the reply carries the file.
        sent = await turn(
            "send",
            ("save_to_local", {"filename": "notes.md", "content": "# Plan\nship it"}),
            ("send_local_file", {"filename": "notes.md"}),
        )
        attached = await fake.wait_for_message(w.general, lambda m: bool(m.get("attachments")), after=sent, timeout=30)
        assert fake.read_attachment(attached["attachments"][0]) == b"# Plan\nship it"
        too_big = await turn("too big", ("save_to_local", {"filename": "big.txt", "content": "y" * 6000}))
        assert too_big and "CLARA_MAX_FILE_SIZE" in results(1)[0]
        await turn("delete", ("delete_local_file", {"filename": "todo.txt"}))
        assert results(1)[0] == "Deleted todo.txt." and not (folder / "todo.txt").exists()
        # !export lists the files; !forgetme erases them.
        await fake.post_message(w.general, ALICE, "!export")
        dm = fake.dm_channel(ALICE)
        with_file = await fake.wait_for_message(dm, lambda m: bool(m.get("attachments")), timeout=30)
        exported = json.loads(fake.read_attachment(with_file["attachments"][0]))
        names = {f["name"] for f in exported["plugins"]["files"]["files"]}
        assert names == {"cat.png", "notes.md"}, exported.get("plugins")
        # !forgetme (its confirmation code) erases the folder.
        who = {"user_id": str(ALICE), "display_name": "alice", "channel_id": "d", "is_dm": True}
        code_reply = await w.engine.handle(IncomingMessage(text="!forgetme", **who))
        code = code_reply.text.split("`!forgetme ")[1][:6]
        done = await w.engine.handle(IncomingMessage(text=f"!forgetme {code}", **who))
        assert not done.error and not folder.exists()
    finally:
        await close()
        await host.aclose()
# ---------------------------------------------------------------------- log mirror, invite link
async def test_console_log_and_lifecycle_events_are_mirrored_to_the_log_channel(store, tmp_path, monkeypatch):
    import logging

    monkeypatch.setenv("OPENAI_API_KEY", "sk-mirror-secret-0123456789")
    engine = ChatEngine(store, None, settings=Settings(CLARA_DATA_DIR=tmp_path))
    fake = FakeDiscord(token="t", app_owner_id=OWNER)
    await fake.start()
    guild = fake.add_guild("Home", owner_id=OWNER)
    general = fake.add_channel(guild, "general")
    logs = fake.add_channel(guild, "bot-logs")
    fake.add_member(guild, ALICE, "alice")
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)  # LOG_LEVEL: what the console shows is what the channel gets
    patch = fake.patch_discord()
    bot = ClaraBot(engine, DiscordSettings(discord_edit_interval=0.05, discord_log_channel_id=logs.id))

    def posted(text):
        return lambda m: text in m["content"]

    try:
        async with fake.running(bot):
            await fake.wait_for_message(logs, posted("🟢 Clara started"))
            logging.getLogger("clara.test").warning("disk nearly full; key sk-mirror-secret-0123456789")
            logging.getLogger("clara.test").debug("a debug line the console does not show")
            line = await fake.wait_for_message(logs, posted("disk nearly full"))
            assert "sk-mirror-secret" not in line["content"] and "WARNING clara.test" in line["content"]
            await fake.request_reconnect()
            await fake.wait_for_message(logs, posted("🔄 Clara resumed"))
            await fake.drop_connections()
            await fake.wait_for_message(logs, posted("🟡 Clara disconnected"), timeout=10)
            await fake.wait_for(lambda: fake.resume_count >= 2, 10, what="second RESUME")
            await fake.wait_for(
                lambda: sum(m["content"].count("🔄") for m in fake.sent(logs)) >= 2, 10, what="resumed after the drop"
            )
            # Chat keeps working; nothing of it goes to the log channel.
            msg = await fake.post_message(general, ALICE, f"<@{bot.user.id}> !remember my locker is 12")
            await fake.wait_for_message(general, after=msg)
        text = "\n".join(m["content"] for m in fake.sent(logs))
        assert "🔴 Clara shutting down" in text
        assert text.count("🟢 Clara started") == 1 and "a debug line" not in text and "locker" not in text
        assert f"invite link: https://discord.com/oauth2/authorize?client_id={bot.application_id}&" in text
        assert "sk-mirror-secret" not in text
        assert bot.log_mirror is None and not any(
            type(h).__name__ == "_Handler" and h.__module__.endswith("logmirror") for h in root.handlers
        )
    finally:
        root.setLevel(old_level)
        patch.restore()
        await fake.close()
        await engine.aclose()


def test_invite_link_from_the_client_id(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from clara.cli import app
    from clara.discord_adapter.logmirror import invite_url

    monkeypatch.setenv("CLARA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DISCORD_CLIENT_ID", raising=False)
    res = CliRunner().invoke(app, ["bot", "--invite"])
    assert res.exit_code == 2 and "DISCORD_CLIENT_ID is not set" in res.output
    monkeypatch.setenv("DISCORD_CLIENT_ID", "not-a-number")
    res = CliRunner().invoke(app, ["bot", "--invite"])
    assert res.exit_code == 2 and "DISCORD_CLIENT_ID" in res.output and "Traceback" not in res.output
    monkeypatch.setenv("DISCORD_CLIENT_ID", "123456789012345678")
    res = CliRunner().invoke(app, ["bot", "--invite"])
    assert res.exit_code == 0
    url = res.output.strip()
    assert url == invite_url(123456789012345678)
    assert url.startswith("https://discord.com/oauth2/authorize?client_id=123456789012345678&permissions=")
    assert "scope=bot+applications.commands" in url
    perms = int(url.split("permissions=")[1].split("&")[0])
    assert discord.Permissions(perms).send_messages and not discord.Permissions(perms).administrator
