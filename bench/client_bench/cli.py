"""`python -m bench.client_bench`: runs in the peer virtualenv (re-executing itself there),
starts a private Redis and a private Redis Cluster, times every candidate in rotated
rounds at each concurrency, checks cancellation safety, prints the table, writes JSON."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.client_bench import peer_venv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.client_bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=4_000,
                        help="calls per candidate, concurrency and round")
    parser.add_argument("--concurrency", default="1,16",
                        help="comma-separated numbers of concurrent tasks")
    parser.add_argument("--deployments", default="single,cluster",
                        help="single, cluster or both (comma-separated)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the service runs on uvloop")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--peers", action="store_true",
                        help="also the peer comparison (cashews, redisvl)")
    return parser


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    args.deployments = str(args.deployments).split(",")
    if args.rounds < 1 or args.calls < 1 or min(args.concurrency) < 1:
        parser.error("--rounds, --calls and --concurrency must be at least 1")
    if max(args.concurrency) > args.calls:
        parser.error("--calls must be at least the largest --concurrency")
    if not set(args.deployments) <= {"single", "cluster"}:
        parser.error("--deployments takes single and/or cluster")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _arguments(argv)  # errors before any venv is built
    if not peer_venv.running_inside(peer_venv.VENV):
        peer_venv.reexec_inside("bench.client_bench", argv)
    from bench.client_bench.session import run  # imports coredis, glide: peer venv only

    results = run(args)
    results["environment"] = _environment()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _environment() -> dict[str, Any]:
    versions = {}
    for name in ("redis", "hiredis", "coredis", "valkey-glide", "uvloop", "cashews",
                 "redisvl"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions,
            "venv": str(peer_venv.VENV), "git": _git("rev-parse", "HEAD"),
            # Other work may be uncommitted in a shared checkout: the store and codec timed
            # (a+, the peers' project rows) are the work tree's.
            "app_uncommitted": _git("status", "--porcelain", "--", "app").splitlines()}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=peer_venv.REPO, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()
