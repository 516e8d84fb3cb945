"""Backups to an S3-compatible bucket (`BACKUP_S3_URL=s3://bucket/prefix`, optional extra `s3`:
boto3). `BACKUP_S3_ENDPOINT_URL` points at any S3-compatible service (MinIO, Ceph, R2, a local
moto server in tests); credentials come from boto3's usual chain (`AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY`, a profile, an instance role). Every call has a timeout (connect 10 s,
read 60 s, 3 attempts)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BACKUP_KEY_RE = re.compile(r"clara-(\d{8})\.(db|dump)$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix without a trailing slash) of `s3://bucket[/prefix]`; ValueError (one
    line) otherwise."""
    m = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?", (url or "").strip())
    if not m:
        raise ValueError(f"BACKUP_S3_URL must look like s3://bucket/prefix, got {str(url)[:80]!r}")
    return m.group(1), (m.group(2) or "").strip("/")


def client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client with bounded timeouts; RuntimeError (one line) without boto3."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise RuntimeError("BACKUP_S3_URL needs boto3: pip install -e '.[s3]'") from exc
    cfg = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1", config=cfg)


def upload_and_prune(
    path: Path, s3_url: str, now: datetime, retention_days: int, *, endpoint_url: str | None = None,
    region: str | None = None,
) -> dict:  # fmt: skip
    """Upload backup file `path` as `<prefix>/<name>` and delete the bucket's `clara-YYYYMMDD.*`
    backups under the prefix dated more than `retention_days` before `now` (by the date in the
    name). Blocking (call from a thread). Returns {"s3": "s3://bucket/key", "s3_pruned": [keys]}.
    Raises RuntimeError / botocore errors (unreachable endpoint, denied, missing bucket)."""
    bucket, prefix = parse_s3_url(s3_url)
    s3 = client(endpoint_url, region)
    key = f"{prefix}/{path.name}" if prefix else path.name
    s3.upload_file(str(path), bucket, key)
    cutoff = (now - timedelta(days=retention_days)).strftime("%Y%m%d")
    gone: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
            m = BACKUP_KEY_RE.fullmatch(name)
            if m and m.group(1) < cutoff:
                s3.delete_object(Bucket=bucket, Key=obj["Key"])
                gone.append(obj["Key"])
    return {"s3": f"s3://{bucket}/{key}", "s3_pruned": sorted(gone)}
