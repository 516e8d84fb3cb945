"""The fake Discord (tests/fake_discord.py) against the REAL discord.py client (commands.Bot)."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

discord = pytest.importorskip("discord")
from discord import app_commands  # noqa: E402
from discord.ext import commands  # noqa: E402

from tests.fake_discord import FakeDiscord  # noqa: E402

pytestmark = pytest.mark.timeout(15)

OWNER, ALICE, BOB = 1001, 1002, 1003
TOKEN = "fake-token"


async def eventually(predicate, timeout: float = 5.0):
    """Poll a bot-side condition (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def make_bot(*, message_content: bool = True) -> commands.Bot:
    intents = discord.Intents.default()
    intents.message_content = message_content
    intents.members = True
    bot = commands.Bot(command_prefix="!", intents=intents)
    bot.seen = []  # messages seen by on_message
    bot.seen_edits = []

    @bot.listen("on_message")
    async def record(message: discord.Message) -> None:
        bot.seen.append(message)

    @bot.listen("on_message_edit")
    async def record_edit(before: discord.Message, after: discord.Message) -> None:
        bot.seen_edits.append(after)

    @bot.command()
    async def ping(ctx: commands.Context) -> None:
        await ctx.reply("pong")

    @bot.command()
    async def count(ctx: commands.Context) -> None:
        msg = await ctx.send("1")
        await msg.edit(content="2")
        await msg.edit(content="3")

    @bot.command()
    async def upload(ctx: commands.Context) -> None:
        await ctx.send("here", file=discord.File(io.BytesIO(b"hello \x00 bytes"), filename="hello.bin"))

    @bot.command()
    async def readfile(ctx: commands.Context) -> None:
        data = await ctx.message.attachments[0].read()
        await ctx.send(f"got {len(data)} bytes: {data.decode()}")

    @bot.command()
    async def slow(ctx: commands.Context) -> None:
        async with ctx.typing():
            await asyncio.sleep(0)
        await ctx.send("done")

    @bot.command()
    async def dmme(ctx: commands.Context) -> None:
        await ctx.author.send("a private hello")

    @bot.tree.command(name="remember", description="Remember a fact")
    @app_commands.describe(fact="what to remember", times="how many times")
    async def remember(interaction: discord.Interaction, fact: str, times: int = 1) -> None:
        roles = [r.name for r in getattr(interaction.user, "roles", [])[1:]]
        await interaction.response.send_message(f"ok {fact} x{times} for {interaction.user.name} {roles}")

    memory = app_commands.Group(
        name="memory", description="Memory admin", default_permissions=discord.Permissions(administrator=True)
    )

    @memory.command(name="forget", description="Forget about a user")
    async def forget(interaction: discord.Interaction, who: discord.Member) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send(f"forgot {who.display_name} (admin={interaction.permissions.administrator})")

    bot.tree.add_command(memory)

    async def setup_hook() -> None:
        await bot.tree.sync()

    bot.setup_hook = setup_hook
    return bot


@pytest.fixture
async def fake():
    async with FakeDiscord(token=TOKEN, bot_name="Clara") as f:
        guild = f.add_guild("Home", owner_id=OWNER, owner_name="owner")
        f.general = f.add_channel(guild, "general", topic="chat")
        f.keeper = f.add_role(guild, "Keeper", permissions=discord.Permissions(manage_messages=True))
        f.admin = f.add_role(guild, "Admin", permissions=discord.Permissions(administrator=True))
        f.add_member(guild, ALICE, "alice", roles=[f.keeper])
        f.add_member(guild, BOB, "bob", roles=["Admin"])
        f.home = guild
        with f.patch_discord():
            yield f


@pytest.fixture
async def bot(fake):
    b = make_bot()
    async with fake.running(b):
        yield b


async def test_login_ready_and_guild_state(fake, bot):
    assert bot.user.id == fake.bot_user.id and bot.user.bot and bot.user.name == "Clara"
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.home.id)
    assert guild is not None and guild.name == "Home" and guild.owner_id == OWNER
    assert guild.get_channel(fake.general.id).name == "general"
    assert {r.name for r in guild.roles} >= {"@everyone", "Keeper", "Admin", "Clara"}
    alice = guild.get_member(ALICE)
    assert alice is not None and [r.name for r in alice.roles[1:]] == ["Keeper"]
    assert guild.get_member(BOB).guild_permissions.administrator
    assert guild.me is not None and guild.me.guild_permissions.send_messages
    assert fake.identify_count == 1
    assert (await bot.fetch_user(ALICE)).name == "alice"
    assert (await guild.fetch_member(ALICE)).roles[-1].name == "Keeper"


async def test_on_message_sees_author_member_and_roles(fake, bot):
    posted = await fake.post_message(fake.general, ALICE, "hello <@1003>", mentions_bot=True)
    msg = await eventually(lambda: next((m for m in bot.seen if m.id == int(posted["id"])), None))
    assert msg.content == f"<@{bot.user.id}> hello <@1003>"
    assert isinstance(msg.author, discord.Member) and msg.author.name == "alice"
    assert [r.name for r in msg.author.roles[1:]] == ["Keeper"]
    assert msg.guild.id == fake.home.id and msg.channel.id == fake.general.id
    assert bot.user in msg.mentions and any(u.id == BOB for u in msg.mentions)
    assert msg.channel.permissions_for(msg.author).manage_messages


async def test_prefix_command_replies(fake, bot):
    cmd = await fake.post_message(fake.general, ALICE, "!ping")
    reply = await fake.wait_for_message(fake.general, after=cmd)
    assert reply["content"] == "pong"
    assert reply["message_reference"]["message_id"] == cmd["id"]
    assert reply["referenced_message"]["content"] == "!ping"
    assert [m["content"] for m in fake.sent(fake.general)] == ["pong"]


async def test_edit_history_recorded(fake, bot):
    cmd = await fake.post_message(fake.general, ALICE, "!count")
    final = await fake.wait_for_message(fake.general, lambda m: m["content"] == "3", after=cmd)
    assert fake.edits(final["id"]) == ["2", "3"]
    assert fake.content_history(final["id"]) == ["1", "2", "3"]
    assert final["edited_timestamp"] is not None
    assert [m["content"] for m in fake.sent(fake.general)] == ["3"]
    await eventually(lambda: any(m.content == "3" for m in bot.seen_edits))  # MESSAGE_UPDATE reached the bot


async def test_file_upload_both_ways(fake, bot):
    cmd = await fake.post_message(fake.general, ALICE, "!upload")
    sent = await fake.wait_for_message(fake.general, after=cmd)
    (att,) = sent["attachments"]
    assert sent["content"] == "here" and att["filename"] == "hello.bin" and att["size"] == 13
    assert fake.read_attachment(att) == b"hello \x00 bytes"

    cmd = await fake.post_message(fake.general, ALICE, "!readfile", attachments=[("note.txt", b"remember me")])
    seen = await eventually(lambda: next((m for m in bot.seen if m.id == int(cmd["id"])), None))
    assert seen.attachments[0].filename == "note.txt" and seen.attachments[0].content_type == "text/plain"
    answer = await fake.wait_for_message(fake.general, after=cmd)
    assert answer["content"] == "got 11 bytes: remember me"


async def test_reply_chain_resolves(fake, bot):
    cmd = await fake.post_message(fake.general, ALICE, "!ping")
    pong = await fake.wait_for_message(fake.general, after=cmd)
    reply = await fake.post_message(fake.general, ALICE, "thanks!", reply_to=pong, mentions_bot=True)
    assert reply["content"] == "thanks!"  # a reply-ping does not rewrite the content
    msg = await eventually(lambda: next((m for m in bot.seen if m.id == int(reply["id"])), None))
    assert msg.type is discord.MessageType.reply
    assert msg.reference.message_id == int(pong["id"])
    resolved = msg.reference.resolved
    assert isinstance(resolved, discord.Message) and resolved.content == "pong" and resolved.author == bot.user
    assert bot.user in msg.mentions
    fetched = await bot.get_channel(fake.general.id).fetch_message(int(pong["id"]))
    assert fetched.content == "pong"
    history = [m.content async for m in bot.get_channel(fake.general.id).history(limit=10)]
    assert history == ["thanks!", "pong", "!ping"]


async def test_dm_both_directions(fake, bot):
    dm = fake.dm_channel(ALICE)
    cmd = await fake.post_message(dm, ALICE, "!ping")
    msg = await eventually(lambda: next((m for m in bot.seen if m.id == int(cmd["id"])), None))
    assert msg.guild is None and isinstance(msg.channel, discord.DMChannel) and msg.author.id == ALICE
    assert (await fake.wait_for_message(dm, after=cmd))["content"] == "pong"

    cmd = await fake.post_message(fake.general, ALICE, "!dmme")
    private = await fake.wait_for_message(dm, lambda m: m["content"] == "a private hello")
    assert "guild_id" not in private
    assert any(r["path"] == "/users/@me/channels" for r in fake.requests)


async def test_typing_recorded(fake, bot):
    cmd = await fake.post_message(fake.general, ALICE, "!slow")
    await fake.wait_for_message(fake.general, lambda m: m["content"] == "done", after=cmd)
    assert fake.typing_events and fake.typing_events[0]["channel_id"] == fake.general.id


async def test_slash_commands_synced_and_invoked(fake, bot):
    registered = {c["name"]: c for c in fake.registered_commands()}
    assert set(registered) == {"remember", "memory"}
    assert [o["name"] for o in registered["remember"]["options"]] == ["fact", "times"]
    assert registered["memory"]["default_member_permissions"] == str(discord.Permissions(administrator=True).value)
    assert [c.name for c in await bot.tree.fetch_commands()] == ["remember", "memory"]

    inter = await fake.invoke_slash(fake.general, ALICE, "remember", {"fact": "tea", "times": 2})
    await inter.wait_done()
    assert inter.response_type == 4
    assert inter.original["content"] == "ok tea x2 for alice ['Keeper']"
    assert fake.interaction_responses[-1]["kind"] == "callback"
    assert fake.sent(fake.general)[-1]["interaction_metadata"]["id"] == str(inter.id)

    with pytest.raises(PermissionError):  # Alice is not an administrator
        await fake.invoke_slash(fake.general, ALICE, "memory", {"who": ALICE}, subcommand="forget")
    inter = await fake.invoke_slash(fake.general, BOB, "memory", {"who": ALICE}, subcommand="forget")
    await inter.wait_done()
    assert inter.response_type == 5 and inter.ephemeral
    assert inter.original["content"] == "forgot alice (admin=True)"
    assert [r["kind"] for r in fake.interaction_responses[-2:]] == ["callback", "followup"]

    dm_inter = await fake.invoke_slash(fake.dm_channel(BOB), BOB, "remember", {"fact": "dm"})
    await dm_inter.wait_done()
    assert dm_inter.original["content"] == "ok dm x1 for bob []"


async def test_429_is_retried(fake, bot):
    fake.rate_limit_once("POST", r"/channels/\d+/messages", retry_after=0.05)
    cmd = await fake.post_message(fake.general, ALICE, "!ping")
    reply = await fake.wait_for_message(fake.general, after=cmd)
    assert reply["content"] == "pong"
    assert len(fake.rate_limit_hits) == 1
    posts = [r for r in fake.requests if r["method"] == "POST" and r["path"] == f"/channels/{fake.general.id}/messages"]
    assert len(posts) == 2  # the 429'd attempt and the retry


async def test_reconnect_resumes(fake, bot):
    await fake.request_reconnect()
    await fake.wait_for(lambda: fake.resume_count == 1, 5, what="RESUME")
    cmd = await fake.post_message(fake.general, ALICE, "!ping")
    assert (await fake.wait_for_message(fake.general, after=cmd))["content"] == "pong"
    assert fake.identify_count == 1


async def test_without_message_content_intent_content_is_blank(fake):
    bot = make_bot(message_content=False)
    async with fake.running(bot):
        plain = await fake.post_message(fake.general, ALICE, "secret")
        pinged = await fake.post_message(fake.general, ALICE, "hi", mentions_bot=True)
        await eventually(lambda: len(bot.seen) >= 2)
        by_id = {m.id: m for m in bot.seen}
        assert by_id[int(plain["id"])].content == ""
        assert by_id[int(pinged["id"])].content == f"<@{bot.user.id}> hi"


async def test_rest_errors_are_realistic(fake, bot):
    channel = bot.get_channel(fake.general.id)
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.status == 400 and too_long.value.code == 50035
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(123)
    assert fake.unhandled == []
