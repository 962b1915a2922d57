"""The command line: runs the four parts on one stack and stops everything it started,
whatever way the run ends."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import bench.service_bench
from bench.service_bench.cluster_hits import part5_cluster_hits
from bench.service_bench.invalidation import part2_invalidation
from bench.service_bench.l1_hit import part1_l1_hit
from bench.service_bench.l2_memory import part3_l2_memory
from bench.service_bench.miss_path import part4_miss_overhead
from bench.service_bench.plan import FULL, QUICK, REPO, RESULTS, BenchError
from bench.service_bench.report import Row, print_table, say, write_results
from bench.service_bench.rig import start_rig
from bench.service_bench.servers import install_signal_handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service_bench",
                                     description=bench.service_bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short run (< 1 min): fewer, shorter rounds; 10^5 instead of 10^6")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS}")
    parser.add_argument("--compare", metavar="REF",
                        help="also run the service as it was at git revision REF (a worktree "
                             "of it), in the same rotation as this tree's: ratios this/REF")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    install_signal_handlers()
    started = time.monotonic()
    say(f"service benchmark ({'quick' if plan.quick else 'full'}) on {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (a shared machine: figures are ratios)")
    rows: list[Row] = []
    data: dict[str, Any] = {"mode": "quick" if plan.quick else "full", "plan": asdict(plan),
                            "cpus": os.cpu_count(),
                            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        with ExitStack() as stack:
            ref_tree = checkout(stack, args.compare) if args.compare else None
            if args.compare:
                data["compare"] = {"ref": args.compare, "commit": _commit(args.compare)}
            rig = start_rig(stack, plan, ref_tree)
            r1, data["l1_hit"] = part1_l1_hit(rig)
            r2, data["invalidation"] = part2_invalidation(plan)
            r3, data["l2_memory"] = part3_l2_memory(rig.redis)
            r4, data["miss_path"] = part4_miss_overhead(rig)
            r5, data["cluster_hits"] = part5_cluster_hits(rig, stack)
            rows = [*r1, *r2, *r3, *r4, *r5]
    except KeyboardInterrupt:
        say("\ninterrupted: everything this benchmark started has been stopped")
        return 130
    except BenchError as exc:
        say(f"\nbenchmark failed: {exc}")
        return 1
    elapsed = time.monotonic() - started
    print_table(rows)
    say(f"\n{'quick' if plan.quick else 'full'} run, {elapsed:.0f} s, load average now "
        f"{os.getloadavg()[0]:.2f}; verdicts use medians of per-round ratios of interleaved runs")
    data["revision"] = _commit("HEAD")
    data["rows"] = [asdict(r) for r in rows]
    data["elapsed_seconds"] = elapsed
    if args.json:
        write_results(data)
    return 0



def checkout(stack: ExitStack, ref: str) -> Path:
    """A detached worktree of `ref` in a temp dir, removed on exit."""
    commit = _commit(ref)
    tree = Path(tempfile.mkdtemp(prefix="aicache-bench-ref-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree),
                    commit], check=True)
    stack.callback(shutil.rmtree, tree.parent, ignore_errors=True)
    stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force",
                                    str(tree)], check=False)
    say(f"--compare {ref}: {commit[:12]} checked out in {tree}")
    return tree


def _commit(ref: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"--compare: {ref!r} is not a revision of this repository")
    return done.stdout.strip()
