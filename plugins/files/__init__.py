"""Local file storage, as in the seed bot: per-user files that persist across sessions.

Each person has a folder under ``CLARA_FILES_DIR`` (default: this plugin's data folder,
``<CLARA_DATA_DIR>/plugins/files``). Files sent as Discord attachments are saved there
automatically (up to ``CLARA_MAX_FILE_SIZE`` bytes, default 50 MB). The model works with them
through the tools ``save_to_local``, ``list_local_files``, ``read_local_file``,
``delete_local_file`` and ``send_local_file`` (which attaches the file to the reply). People
only ever see their own folder: a name is one plain file name (no folders, no ``..``, no control
characters), resolved inside the caller's folder. Errors (missing, too large, binary) come back to
the model as one sentence. ``!forgetme`` deletes the folder; ``!export`` lists its files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from clara.plugin_api import Invocation, Manifest, PluginError

MANIFEST = Manifest(
    name="files",
    version="1.0",
    description="Keeps your files (attachments you send, text Clara saves for you) in your own folder.",
    data_statement=(
        "Stores the files you send as attachments and the files Clara saves for you, in a folder only you can "
        "use; !forgetme deletes them, !export lists them."
    ),
)

DEFAULT_MAX = 50 * 1024 * 1024
READ_CHARS = 20_000  # the most of one file the model reads at once
NAME_MAX = 128
BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")

_DIRS: dict[int, Path] = {}


def max_file_size() -> int:
    """``CLARA_MAX_FILE_SIZE`` in bytes (default 50 MB; an unusable value falls back to it)."""
    raw = os.environ.get("CLARA_MAX_FILE_SIZE", "").strip()
    try:
        value = int(raw) if raw else DEFAULT_MAX
    except ValueError:
        return DEFAULT_MAX
    return value if value > 0 else DEFAULT_MAX


def files_root(ctx) -> Path:
    """Where everyone's folders live: ``CLARA_FILES_DIR`` or the plugin's data folder."""
    raw = os.environ.get("CLARA_FILES_DIR", "").strip()
    root = Path(raw).expanduser() if raw else ctx.data_dir
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def user_dir(root: Path, user_id: str, *, create: bool = False) -> Path:
    """The folder of `user_id`: a readable, collision-free name (cleaned id + hash of the exact id)."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", user_id)[:40] or "user"
    digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    path = root / f"{clean}-{digest}"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: object) -> str:
    """A plain file name, or PluginError saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise PluginError("a file name is needed")
    name = name.strip()
    if BAD_NAME.search(name) or name in (".", "..") or name.startswith(".."):
        raise PluginError(f"{name[:60]!r} is not a plain file name (no folders, '..' or control characters)")
    if len(name) > NAME_MAX:
        raise PluginError(f"file names are at most {NAME_MAX} characters")
    return name


def resolve(root: Path, user_id: str, name: object, *, create: bool = False) -> Path:
    """The path of `name` in the caller's folder, checked to stay inside it."""
    folder = user_dir(root, user_id, create=create)
    path = (folder / safe_name(name)).resolve()
    if path.parent != folder.resolve():
        raise PluginError("that name points outside your folder")
    return path


def _human(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def _listing(folder: Path) -> list[dict]:
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file():
            st = p.stat()
            modified = datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
            out.append({"name": p.name, "size": st.st_size, "modified": modified})
    return out


def store_bytes(root: Path, user_id: str, name: str, data: bytes) -> Path:
    """Write `data` as `name` in the user's folder (replacing a file of that name)."""
    limit = max_file_size()
    if len(data) > limit:
        raise PluginError(
            f"{name[:60]} is {_human(len(data))}; files are kept up to {_human(limit)} (CLARA_MAX_FILE_SIZE)"
        )
    path = resolve(root, user_id, name, create=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


async def setup(ctx) -> None:
    root = files_root(ctx)
    _DIRS[id(ctx)] = root

    @ctx.on("attachment")
    async def keep_attachment(inv: Invocation, filename: str, data: bytes) -> None:
        try:
            store_bytes(root, inv.user_id, Path(str(filename)).name or "attachment", data)
        except PluginError as exc:
            ctx.log.info("attachment %r from %s not kept: %s", filename, inv.user_id, exc)

    name_only = {
        "type": "object",
        "properties": {"filename": {"type": "string", "minLength": 1, "maxLength": NAME_MAX}},
        "required": ["filename"],
    }

    @ctx.tool(
        "save_to_local",
        description="Save text as a file in the user's own file storage (persists across sessions; replaces a "
        "file of the same name).",
        parameters={
            "type": "object",
            "properties": {
                "filename": {"type": "string", "minLength": 1, "maxLength": NAME_MAX},
                "content": {"type": "string"},
            },
            "required": ["filename", "content"],
        },
    )
    async def save_to_local(inv: Invocation, args: dict) -> str:
        try:
            path = store_bytes(root, inv.user_id, safe_name(args["filename"]), args["content"].encode("utf-8"))
        except PluginError as exc:
            return f"error: {exc}"
        return f"Saved {path.name} ({_human(path.stat().st_size)})."

    @ctx.tool(
        "list_local_files",
        description="List the files in the user's own file storage.",
        parameters={"type": "object", "properties": {}},
    )
    async def list_local_files(inv: Invocation, args: dict) -> str:
        files = _listing(user_dir(root, inv.user_id))
        if not files:
            return "No saved files."
        return "\n".join(f"- {f['name']} ({_human(f['size'])}, modified {f['modified']})" for f in files)

    def saved(inv: Invocation, args: dict, hint: str = "") -> Path | str:
        """The user's saved file named in `args`, or the one-line error to return instead."""
        try:
            path = resolve(root, inv.user_id, args["filename"])
        except PluginError as exc:
            return f"error: {exc}"
        if not path.is_file():
            return f"error: there is no saved file called {path.name!r}{hint}"
        return path

    @ctx.tool(
        "read_local_file",
        description=f"Read a text file from the user's own file storage (the first {READ_CHARS:,} characters).",
        parameters=name_only,
    )
    async def read_local_file(inv: Invocation, args: dict) -> str:
        path = saved(inv, args, hint=" (list_local_files shows what there is)")
        if isinstance(path, str):
            return path
        with path.open("rb") as fh:
            head = fh.read(READ_CHARS * 4 + 1)
        size = path.stat().st_size
        if b"\x00" in head[:8192]:
            return (
                f"error: {path.name} is a binary file ({_human(size)}); it can be sent with send_local_file, not read"
            )
        text = head.decode("utf-8", errors="replace")
        if "\ufffd" in text[:2000] and text[:2000].count("\ufffd") > 20:
            return f"error: {path.name} is not UTF-8 text ({_human(size)}); it can be sent, not read"
        if len(text) > READ_CHARS or size > len(head):
            return text[:READ_CHARS] + f"\n[... {path.name} is {_human(size)}; only the start is shown]"
        return text

    @ctx.tool("delete_local_file", description="Delete a file from the user's own file storage.", parameters=name_only)
    async def delete_local_file(inv: Invocation, args: dict) -> str:
        path = saved(inv, args)
        if isinstance(path, str):
            return path
        path.unlink()
        return f"Deleted {path.name}."

    @ctx.tool(
        "send_local_file",
        description="Send a file from the user's own file storage to them, attached to your reply.",
        parameters=name_only,
    )
    async def send_local_file(inv: Invocation, args: dict) -> str:
        path = saved(inv, args)
        if isinstance(path, str):
            return path
        size = path.stat().st_size
        if size > max_file_size():
            return f"error: {path.name} is {_human(size)}, over CLARA_MAX_FILE_SIZE"
        ctx.attach(inv, path.name, path.read_bytes())
        return f"{path.name} ({_human(size)}) is attached to your reply."


async def teardown(ctx) -> None:
    _DIRS.pop(id(ctx), None)


def _root(ctx) -> Path:
    return _DIRS.get(id(ctx)) or files_root(ctx)


async def delete_user_data(ctx, user_id: str) -> int:
    """`!forgetme`: the user's whole folder; the number of files deleted."""
    folder = user_dir(_root(ctx), user_id)
    if not folder.is_dir():
        return 0
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return count


async def export_user_data(ctx, user_id: str) -> dict:
    """`!export`: the user's files (name, size in bytes, modified); their contents stay on disk."""
    return {"files": _listing(user_dir(_root(ctx), user_id))}
