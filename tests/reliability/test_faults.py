"""Faults: a misbehaving LLM (500s, timeouts, garbage, dropped streams), PostgreSQL restarted
mid-run (a private cluster, so other users of the shared server are not disturbed), and the bot
process SIGKILLed mid-ingest and restarted."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clara.ops.load import run_load
from tests.llm_stub import Reply, delayed, error

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent.parent


async def test_llm_errors_timeouts_and_garbage_lose_no_message(embedder):
    pytest.importorskip("discord")

    def faults(model):
        model.faults += [error(500)] * 4 + [delayed(3.0)] * 2 + [Reply(raw="{garbage")] * 2
        model.faults += [Reply(text="partial answer that never ends " * 5, drop_after=2)] * 2
        model.extract_faults += [Reply(raw="not json at all")] * 3 + [error(500)] * 2

    res = await run_load(6, 4, embedder=embedder, model_hook=faults, provider_timeout=1.0, llm_timeout=5.0)
    assert res["lost_messages"] == 0
    assert res["undelivered_replies"] == 0  # every message got an answer or the clear apology
    assert 1 <= res["apologies"] <= 10
    assert res["duplicate_facts"] == 0
    assert res["missing_turn_facts"] == 0  # every stored turn was processed by the memory worker
    assert res["memory_jobs_left"] == 0


# ------------------------------------------------------------------------------ PostgreSQL restart
def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) in a temp dir; as root it runs as the
    `postgres` user (initdb refuses root)."""

    def __init__(self, root: Path):
        self.bin = _pg_bin()
        if self.bin is None:
            pytest.skip("PostgreSQL server binaries (initdb/pg_ctl) not found")
        self.dir = root / "pgdata"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                pytest.skip("running as root without runuser: cannot start a private cluster")
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self.opts = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.log = root / "pg.log"

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr or proc.stdout}")

    def start(self) -> str:
        self._run(str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-o", self.opts, "-l", str(self.log), "-w", "start")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def restart(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir),
            "-o",
            self.opts,
            "-l",
            str(self.log),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop")
        except Exception:
            pass


async def test_postgresql_restart_mid_run_loses_no_acknowledged_message(tmp_path, embedder):
    from clara.chat import ChatEngine, IncomingMessage
    from clara.settings import Settings
    from storage import FactStore, StoreConfig

    base = Path("/tmp") / f"clara-pg-{os.getpid()}-{tmp_path.name}"[:60]  # short socket path
    base.mkdir(parents=True, exist_ok=True)
    cluster = PrivateCluster(base)
    try:
        url = await asyncio.to_thread(cluster.start)
    except RuntimeError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start a private PostgreSQL cluster here: {exc}"[:300])
    store = await FactStore.open(StoreConfig(database_url=url, data_dir=tmp_path), embedder=embedder)
    engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=tmp_path))
    # A job whose worker lost the database mid-job stays leased until the lease runs out (120 s by
    # default): a short lease keeps the test short, as in tests/crash_chat.py.
    engine.memory.lease = 2.0
    acked: dict[int, str] = {}
    failures: list[str] = []
    try:

        async def send(i: int) -> None:
            text = f"I keep restart plant number {i} on the shelf"
            try:
                reply = await engine.handle(
                    IncomingMessage(user_id=f"u{i % 3}", display_name=f"U{i % 3}", channel_id="pg", text=text)
                )
            except Exception as exc:  # the database went away under this message: no ack given
                failures.append(f"{i}: {type(exc).__name__}")
                return
            if reply.message_id is not None:
                acked[reply.message_id] = text
            else:
                failures.append(f"{i}: {reply.text[:60]}")

        for i in range(10):
            await send(i)
        restart = asyncio.create_task(asyncio.to_thread(cluster.restart))
        i = 10
        while not restart.done():
            await send(i)
            i += 1
            await asyncio.sleep(0.02)
        await restart
        for j in range(i, i + 10):
            await send(j)
        assert len(acked) >= 20
        # After the restart every message is acknowledged again (pre-ping reconnects the pool).
        assert not [f for f in failures if int(f.split(":")[0]) >= i], failures
        await engine.drain(timeout=120)
        stored = {m["id"]: m["content"] for m in await store.recent_messages("channel:pg", limit=500)}
        for mid, text in acked.items():
            assert stored.get(mid) == text
        assert await store.jobs.count(("pending", "running", "failed")) == 0
    finally:
        await engine.aclose()
        await store.aclose()
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------ SIGKILL the bot
async def test_bot_sigkilled_mid_ingest_then_restarted_completes_pending_work(tmp_path, embedder, monkeypatch):
    discord = pytest.importorskip("discord")  # noqa: F841
    from clara.chat import ChatEngine
    from clara.discord_adapter.bot import ClaraBot
    from clara.discord_adapter.settings import DiscordSettings
    from clara.llm import OpenAICompatProvider
    from clara.settings import Settings
    from storage import FactStore, StoreConfig
    from tests.fake_discord import FakeDiscord
    from tests.llm_stub import LLMStub, json_reply, last_user_text

    def model(body):
        if body.get("response_format"):
            return Reply(text='{"facts": []}', delay=0.6)  # slow extraction: work is pending at the kill
        if body.get("tools"):
            return Reply(text=f"noted: {last_user_text(body)[-60:]}")
        return Reply(text="summary")

    assert json_reply  # same stub protocol as the rest of the suite
    stub = LLMStub(responder=model).start()
    users = [7001, 7002, 7003]
    async with FakeDiscord(token="kill-token", app_owner_id=1) as fake:
        guild = fake.add_guild("Kill", owner_id=1)
        for u in users:
            fake.add_member(guild, u, f"u{u}")
        env = {
            **os.environ,
            "CLARA_DATA_DIR": str(tmp_path),
            "DISCORD_BOT_TOKEN": "kill-token",
            "DISCORD_API_BASE": fake.api_url,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "LLM_PROVIDER": "openai",
            "CUSTOM_OPENAI_BASE_URL": stub.base_url,
            "CUSTOM_OPENAI_API_KEY": "stub-key",
            "CUSTOM_OPENAI_MODEL": "m",
            "OPENAI_BASE_URL": stub.base_url,
            "OPENAI_API_KEY": "stub-key",
        }
        env.pop("DATABASE_URL", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clara.cli",
            "bot",
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        acked: list[str] = []
        try:
            await fake.wait_until_connected(timeout=60)
            await asyncio.sleep(0.5)

            async def person(u: int) -> None:
                dm = fake.dm_channel(u)
                for i in range(5):
                    text = f"my kill tag is Q{u}n{i}"
                    posted = await fake.post_message(dm, u, text)
                    await fake.wait_for_message(
                        dm, lambda m, tag=f"Q{u}n{i}": tag in m["content"], after=posted, timeout=30
                    )
                    acked.append(f"Q{u}n{i}")

            await asyncio.gather(*(person(u) for u in users))
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        assert len(acked) == 15
        # Restart (in-process, same data dir and fake Discord). Jobs the killed worker had leased
        # become claimable when their lease (120 s) runs out: the job queue's clock is moved past it.
        from datetime import UTC, datetime, timedelta

        from storage.clock import ManualClock

        later = ManualClock(datetime.now(UTC) + timedelta(seconds=130), ticking=True)
        store = await FactStore.open(StoreConfig(data_dir=tmp_path, clock=later), embedder=embedder)
        left = await store.jobs.count(("pending", "running"))
        assert left > 0, "the kill should land mid-ingest (slow extraction)"
        llm = OpenAICompatProvider(base_url=stub.base_url, api_key="k", model="m", timeout=10, max_retries=0)
        engine = ChatEngine(store, llm, settings=Settings(CLARA_DATA_DIR=tmp_path))
        patch = fake.patch_discord()
        bot = ClaraBot(engine, DiscordSettings(discord_edit_interval=0.05))
        try:
            async with fake.running(bot):
                dm = fake.dm_channel(users[0])
                posted = await fake.post_message(dm, users[0], "my kill tag is AFTER1")
                await fake.wait_for_message(dm, lambda m: "AFTER1" in m["content"], after=posted, timeout=30)
                await engine.drain(timeout=120)
            assert await store.jobs.count(("pending", "running", "failed")) == 0
            for u in users:
                turns = [
                    m["content"] for m in await store.recent_messages(f"user:{u}", limit=200) if m["role"] == "user"
                ]
                facts = [f.content for f in await store.list_facts([f"user:{u}"], limit=500)]
                for tag in (t for t in acked if t.startswith(f"Q{u}n")):
                    assert sum(tag in t for t in turns) == 1, tag  # acknowledged = stored, once
                    assert sum(tag in f for f in facts) == 1, tag  # its memory work done, once
        finally:
            patch.restore()
            await engine.aclose()
            await llm.aclose()
            await store.aclose()
            stub.stop()
