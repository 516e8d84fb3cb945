"""Helper process for test_pipeline's restart test: a chat engine whose memory worker is slowed
to a crawl (each job takes 30 s), acknowledging messages as fast as it can (prints each stored
message id after `handle` returns); it waits to be killed with SIGKILL mid-extraction."""

import asyncio
import sys
from pathlib import Path

from conftest import helper_clock  # tests/ is this script's sys.path[0]

from clara.chat import ChatEngine, IncomingMessage
from clara.settings import Settings
from storage import FactStore, StoreConfig


async def main(data_dir: str, database_url: str | None, n: int) -> None:
    store = await FactStore.open(
        StoreConfig(database_url=database_url or None, data_dir=Path(data_dir), clock=helper_clock())
    )
    engine = ChatEngine(store, settings=Settings(CLARA_DATA_DIR=data_dir))
    engine.memory.lease = 2.0  # a killed worker's jobs become claimable again after 2 s
    real = engine.memory.writer.process

    async def slow(job):
        await asyncio.sleep(30)
        await real(job)

    engine.memory.writer.process = slow
    for i in range(n):
        reply = await engine.handle(
            IncomingMessage(
                user_id=f"u{i % 3}",
                display_name=f"U{i % 3}",
                channel_id="crash",
                text=f"I keep a kiwi plant number {i} on the balcony",
            )
        )
        print(reply.message_id, flush=True)
    print("DONE", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
