"""The separate virtualenv the client comparison runs in (never the project's lock).

coredis, valkey-glide and the peers (cashews, redisvl) are not project dependencies: the
bench creates ~/.cache/ai-cache-rollout/bench-peers on first use, installs into it the
project's own locked dependencies (so redis-py and hiredis are exactly the service's), the
compared clients pinned, and the project itself (editable, no deps), and re-runs itself
there. A stamp holding the hash of what was installed makes later runs reuse it.

Standard library only: this module runs in the project's venv, before the re-exec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
VENV = Path.home() / ".cache" / "ai-cache-rollout" / "bench-peers"
STAMP = ".bench-peers-stamp"
# Pinned so that two runs compare the same code; installed with the lock as constraints.
PEERS = ("coredis==6.9.0", "valkey-glide==2.6.0", "cashews==7.6.0", "redisvl==0.28.0")
_REEXEC_MARK = "AI_CACHE_CLIENT_BENCH_IN_PEERS"


def wanted_stamp(lock_text: str, peers: tuple[str, ...] = PEERS) -> str:
    """What an up-to-date venv was built from: the lock's content and the peer pins."""
    digest = hashlib.sha256(lock_text.encode())
    for pin in peers:
        digest.update(b"\0" + pin.encode())
    return digest.hexdigest()


def is_current(venv: Path, stamp: str) -> bool:
    marker = venv / STAMP
    return (venv / "bin" / "python").exists() and marker.exists() \
        and marker.read_text().strip() == stamp


def running_inside(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


def _install(venv: Path) -> None:
    python = str(venv / "bin" / "python")
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                       check=True)
        pip = [uv, "pip", "install", "--quiet", "--python", python]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(LOCK)], check=True)
    subprocess.run([*pip, "-c", str(LOCK), *PEERS], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True)


def ensure(venv: Path = VENV) -> Path:
    """Create (or rebuild, when the lock or the pins changed) and return the peer venv."""
    stamp = wanted_stamp(LOCK.read_text())
    if not is_current(venv, stamp):
        print(f"client_bench: building the peer virtualenv {venv} (once)", file=sys.stderr)
        if venv.exists():
            shutil.rmtree(venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        _install(venv)
        (venv / STAMP).write_text(stamp + "\n")
    return venv


def reexec_inside(module: str, argv: list[str], venv: Path = VENV) -> None:
    """Replace this process by `python -m module argv` in the peer venv (from the repo
    root, so `bench` and `devstack` import from the work tree)."""
    if os.environ.get(_REEXEC_MARK):
        raise RuntimeError(f"re-executed into {venv} but still not running inside it")
    python = ensure(venv) / "bin" / "python"
    os.chdir(REPO)
    env = {**os.environ, _REEXEC_MARK: "1"}
    os.execve(str(python), [str(python), "-m", module, *argv], env)
