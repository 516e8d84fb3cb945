"""Installing MCP servers as the seed bot did: from npm, a local path, a git URL or a Docker image.

`resolve_source` turns what an admin (or the model, through `mcp_install`) typed into a
`ServerSpec` whose stdio command runs the server:

- a local path: a ``.py`` file runs with this Python, a ``.js``/``.mjs``/``.cjs`` file with ``node``,
  an executable file directly, a folder through its ``package.json`` (``bin`` or ``main``, run with
  node), its ``__main__.py`` or ``server.py`` (this Python);
- an npm package (``@scope/name``, ``name``, ``name@version``): ``npm install --prefix
  <data_dir>/servers/<name>`` and the package's ``bin`` (one prefix per server, removed on uninstall);
- a git URL (``https://github.com/...``, ``github.com/user/repo``, ``git@...``): cloned with ``git``
  into the server's folder, then run as a local path;
- a Docker image (``docker:IMAGE`` or ``ghcr.io/...``/``docker.io/...``): ``docker run -i --rm IMAGE``.

A tool that is missing (npm, git, docker, node) is a clear `PluginError`, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

from clara.plugin_api import PluginError

from .bridge import NAME_RE, ServerSpec

INSTALL_TIMEOUT = 300.0
# What npm/git need from the bot's environment to reach their registries (proxy, extra CA certificates);
# nothing else (no API keys) reaches an install step. The servers themselves get bridge.child_env only.
INSTALL_ENV = frozenset(
    {"PATH", "HOME", "LANG", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO"}
    | {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
)
NPM_RE = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*(@[A-Za-z0-9._^~<>=*-]+)?$")
GIT_RE = re.compile(r"^(https?://(github\.com|gitlab\.com|bitbucket\.org)/|github\.com/|git@|git\+https?://|.*\.git$)")
DOCKER_RE = re.compile(r"^(docker:|(ghcr\.io|docker\.io|quay\.io|registry\.[\w.-]+)/)")
PY_SUFFIXES = (".py",)
NODE_SUFFIXES = (".js", ".mjs", ".cjs")


def default_name(source: str) -> str:
    """A server name from its source: the last path/package component, lowercased and cleaned."""
    base = source.rstrip("/").removeprefix("docker:").removeprefix("npm:")
    base = base.split("@")[0] if not base.startswith("@") else "@" + base[1:].split("@")[0]
    base = re.split(r"[/:]", base)[-1].removesuffix(".git")
    base = re.sub(r"\.(py|js|mjs|cjs)$", "", base)
    base = re.sub(r"^(mcp-server-|server-|mcp-)", "", base.lower())
    base = re.sub(r"[^a-z0-9_-]", "-", base).strip("-_")[:24] or "server"
    if not base[0].isalnum():
        base = "s" + base[:23]
    return base


def source_kind(source: str) -> str:
    """``local`` | ``git`` | ``docker`` | ``npm`` for what the admin typed (``npm:<spec>`` forces npm,
    e.g. ``npm:./my-server`` installs a local package folder with npm)."""
    if source.startswith("npm:"):
        return "npm"
    if source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists():
        return "local"
    if GIT_RE.match(source):
        return "git"
    if DOCKER_RE.match(source):
        return "docker"
    if NPM_RE.match(source):
        return "npm"
    raise PluginError(
        f"I can't tell what {source[:80]!r} is: give a local path, an npm package (e.g. "
        "@modelcontextprotocol/server-everything), a git URL or docker:IMAGE."
    )


def _need(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise PluginError(f"`{tool}` is not installed on this machine, so I can't {why}.")
    return path


def local_command(path: Path) -> list[str]:
    """The command that runs the server at `path` (a file or a folder)."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise PluginError(f"no such file or folder: {path}")
    if path.is_file():
        if path.suffix in PY_SUFFIXES:
            return [sys.executable, str(path)]
        if path.suffix in NODE_SUFFIXES:
            return [_need("node", "run a JavaScript MCP server"), str(path)]
        if os.access(path, os.X_OK):
            return [str(path)]
        raise PluginError(f"{path.name} is not a .py/.js file or an executable, so I don't know how to run it.")
    package = path / "package.json"
    if package.is_file():
        entry = _package_entry(package)
        if entry is not None:
            return [_need("node", "run a JavaScript MCP server"), str(entry)]
    for name in ("__main__.py", "server.py", "main.py"):
        if (path / name).is_file():
            return [sys.executable, str(path / name)]
    raise PluginError(
        f"{path} has no package.json with a bin/main, and no __main__.py, server.py or main.py: "
        "I don't know how to start it."
    )


def _package_entry(package: Path) -> Path | None:
    try:
        data = json.loads(package.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PluginError(f"can't read {package}: {exc}") from exc
    bin_ = data.get("bin")
    if isinstance(bin_, str):
        return package.parent / bin_
    if isinstance(bin_, dict) and bin_:
        return package.parent / next(iter(bin_.values()))
    if isinstance(data.get("main"), str):
        return package.parent / data["main"]
    return None


async def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = INSTALL_TIMEOUT) -> None:
    """Run an install step; its failure becomes a PluginError with the tail of its output."""
    env = {k: v for k, v in os.environ.items() if k in INSTALL_ENV or k.lower().startswith("npm_config_")}
    env["npm_config_update_notifier"] = "false"
    env["npm_config_fund"] = "false"
    env["npm_config_audit"] = "false"
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise PluginError(
            f"`{Path(cmd[0]).name} {cmd[1]}` took longer than {timeout:g} s; nothing was installed."
        ) from exc
    if proc.returncode != 0:
        tail = [line for line in out.decode("utf-8", "replace").splitlines() if line.strip()][-3:]
        raise PluginError(f"`{Path(cmd[0]).name} {cmd[1]}` failed: " + " / ".join(t.strip()[:200] for t in tail))


async def install_npm(package: str, prefix: Path) -> list[str]:
    """`npm install --prefix <prefix> <package>`; the command of the package's bin."""
    npm = _need("npm", "install npm packages")
    prefix.mkdir(parents=True, exist_ok=True)
    await _run([npm, "install", "--prefix", str(prefix), "--no-save", "--omit=dev", package])
    name = package if not package.startswith("@") else "@" + package[1:].split("@")[0]
    name = name.split("@")[0] if not name.startswith("@") else name
    if Path(package).expanduser().exists():  # a local folder given to npm: its package.json names it
        name = json.loads((Path(package).expanduser() / "package.json").read_text(encoding="utf-8"))["name"]
    installed = prefix / "node_modules" / name / "package.json"
    if not installed.is_file():
        raise PluginError(f"npm finished but {name} is not in {prefix / 'node_modules'}.")
    entry = _package_entry(installed)
    if entry is None:
        raise PluginError(f"the npm package {name} has no bin or main to start.")
    return [_need("node", "run a JavaScript MCP server"), str(entry.resolve())]


async def resolve_source(source: str, name: str | None, servers_dir: Path) -> tuple[ServerSpec, Path | None]:
    """The spec for `source` (installing it when needed) and the folder made for it (None if none)."""
    source = source.strip()
    if not source:
        raise PluginError("mcp_install needs a source: a local path, an npm package, a git URL or docker:IMAGE.")
    name = (name or default_name(source)).strip().lower()
    if not NAME_RE.match(name):
        raise PluginError("server names are 1-24 of lowercase letters, digits, '-' and '_'")
    kind = source_kind(source)
    folder = servers_dir / name
    if kind == "local":
        return ServerSpec(name, "stdio", command=local_command(Path(source))), None
    if kind == "docker":
        docker = _need("docker", "run Docker images")
        image = source.removeprefix("docker:")
        return ServerSpec(name, "stdio", command=[docker, "run", "-i", "--rm", image]), None
    if folder.exists():
        shutil.rmtree(folder)
    try:
        if kind == "git":
            git = _need("git", "clone git repositories")
            url = source if "://" in source or source.startswith("git@") else f"https://{source}"
            await _run([git, "clone", "--depth", "1", url.removeprefix("git+"), str(folder)])
            if (folder / "package.json").is_file() and shutil.which("npm"):
                await _run([shutil.which("npm") or "npm", "install", "--omit=dev"], cwd=folder)
            return ServerSpec(name, "stdio", command=local_command(folder)), folder
        return ServerSpec(name, "stdio", command=await install_npm(source.removeprefix("npm:"), folder)), folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
