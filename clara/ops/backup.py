"""`clara db backup FILE` / `clara db restore FILE`.

SQLite: the online backup API (`sqlite3.Connection.backup`), consistent while Clara runs; restore
copies the backup into the live file the same way (page by page, under SQLite's locks).
PostgreSQL: `pg_dump -Fc` / `pg_restore --clean --if-exists --no-owner` (found on PATH or in
/usr/lib/postgresql/*/bin); the password goes through PGPASSWORD, never the command line.
The vector index is derived data: after a restore it is rebuilt from SQL (`clara memory reindex`).
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(RuntimeError):
    pass


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return candidates[-1]
    raise BackupError(f"{name} not found (install the PostgreSQL client tools)")


def _pg_args(url: str) -> tuple[str, dict]:
    """A libpq URL without the password, and an env carrying it."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    plain = u.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return plain, env


def _sqlite_path(url: str) -> Path:
    db = make_url(url).database
    if not db or db == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(db)


def backend_of(url: str) -> str:
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


def backup(url: str, dest: Path) -> dict:
    """Write a consistent backup of the database at `url` (async or sync URL) to `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if backend_of(url) == "sqlite":
        src_path = _sqlite_path(url)
        if not src_path.exists():
            raise BackupError(f"no database at {src_path}")
        tmp = dest.with_name(dest.name + ".partial")
        tmp.unlink(missing_ok=True)
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst, pages=1024)
                check = dst.execute("PRAGMA integrity_check").fetchone()[0]
                if check != "ok":
                    raise BackupError(f"backup failed its integrity check: {check}")
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(tmp, dest)
        return {"backend": "sqlite", "file": str(dest), "bytes": dest.stat().st_size}
    plain, env = _pg_args(url)
    tmp = dest.with_name(dest.name + ".partial")
    proc = subprocess.run(
        [_pg_tool("pg_dump"), "-Fc", "--no-owner", "-f", str(tmp), "-d", plain],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {proc.stderr.strip()[:500]}")
    os.replace(tmp, dest)
    return {"backend": "postgresql", "file": str(dest), "bytes": dest.stat().st_size}


def restore(url: str, src: Path) -> dict:
    """Replace the database at `url` with the backup in `src` (made by `backup`)."""
    src = Path(src)
    if not src.is_file():
        raise BackupError(f"no backup file at {src}")
    if backend_of(url) == "sqlite":
        with open(src, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise BackupError(f"{src} is not an SQLite backup")
        dest_path = _sqlite_path(url)
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(dest_path, timeout=30)
            try:
                source.backup(dst)
            finally:
                dst.close()
        finally:
            source.close()
        return {"backend": "sqlite", "file": str(dest_path)}
    with open(src, "rb") as f:
        if f.read(5) != b"PGDMP":
            raise BackupError(f"{src} is not a pg_dump custom-format backup")
    plain, env = _pg_args(url)
    proc = subprocess.run(
        [_pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction", "-d", plain, str(src)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BackupError(f"pg_restore failed: {proc.stderr.strip()[:500]}")
    return {"backend": "postgresql", "file": str(src)}
