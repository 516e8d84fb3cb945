"""Helper process for test_restart: opens a store, acknowledges facts as fast as it can (printing
each id after `add` returns), and waits to be killed with SIGKILL."""

import asyncio
import sys
from pathlib import Path

from conftest import helper_clock  # tests/ is this script's sys.path[0]

from storage import FactStore, StoreConfig


async def main(data_dir: str, database_url: str | None, n: int, index: bool) -> None:
    store = await FactStore.open(
        StoreConfig(database_url=database_url or None, data_dir=Path(data_dir), clock=helper_clock()),
        start_indexer=index,
    )
    await store.ensure_scope("user:crash", "user", owner="crash")
    for i in range(n):
        fid = await store.add(f"acknowledged fact number {i} about kiwis", "user:crash")
        print(fid, flush=True)
    print("DONE", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "index"))
