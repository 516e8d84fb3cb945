"""Scheduled backups to an S3-compatible bucket (BACKUP_S3_URL), through `clara maintenance run
backup`, against a local moto S3 server: the backup is uploaded, older backups under the prefix
are pruned by the date in their name, other objects are left alone, and errors are one line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def clara(args: list[str], data_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLARA_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    for var in ("DATABASE_URL", "CLARA_TABLE_PREFIX", "LLM_PROVIDER", "BACKUP_DIR"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "clara.cli", *args],
        capture_output=True,
        text=True,
        env={**env, **extra},
        cwd=ROOT,
        timeout=120,
    )


def test_backup_to_s3_uploads_and_prunes(tmp_path, s3_server):
    import boto3

    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")  # fmt: skip
    s3.create_bucket(Bucket="clara-backups")
    s3.put_object(Bucket="clara-backups", Key="nightly/clara-20200101.db", Body=b"old")
    s3.put_object(Bucket="clara-backups", Key="nightly/notes.txt", Body=b"keep me")
    s3.put_object(Bucket="clara-backups", Key="other/clara-20200101.db", Body=b"another prefix")
    added = clara(["memory", "add", "alice keeps her passport in the drawer", "--user", "alice"], tmp_path)
    assert added.returncode == 0, added.stderr[-2000:]
    env = {**creds, "BACKUP_S3_URL": "s3://clara-backups/nightly", "BACKUP_S3_ENDPOINT_URL": s3_server}
    res = clara(["maintenance", "run", "backup"], tmp_path, **env)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    today = datetime.now(UTC).strftime("%Y%m%d")  # the CLI store runs on the system clock
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="clara-backups")["Contents"])
    assert keys == [f"nightly/clara-{today}.db", "nightly/notes.txt", "other/clara-20200101.db"], keys
    assert "nightly/clara-20200101.db" in res.stdout  # reported as pruned
    got = tmp_path / "restored.db"
    s3.download_file("clara-backups", f"nightly/clara-{today}.db", str(got))
    with sqlite3.connect(got) as conn:
        assert conn.execute("SELECT content FROM facts").fetchall() == [("alice keeps her passport in the drawer",)]
    assert not list(tmp_path.glob("clara-2*.db"))  # no local copy without BACKUP_DIR
    # A bucket that does not exist, and an endpoint that is down: one line, exit 1.
    for bad in ({"BACKUP_S3_URL": "s3://no-such-bucket/x"}, {"BACKUP_S3_ENDPOINT_URL": "http://127.0.0.1:9"}):
        res = clara(["maintenance", "run", "backup"], tmp_path, **{**env, **bad})
        assert res.returncode == 1 and "S3 upload to" in res.stdout and "Traceback" not in res.stdout + res.stderr
    res = clara(["maintenance", "run", "backup"], tmp_path, **{**env, "BACKUP_S3_URL": "http://nope"})
    assert res.returncode != 0 and "BACKUP_S3_URL must look like s3://bucket/prefix" in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
