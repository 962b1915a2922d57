"""`python -m scripts.svc.unleash start|stop|status [--format json|env] [--no-bootstrap]`:
the Unleash starter for people (scripts/unleash-start and scripts/unleash-stop wrap it);
`start` also creates the rollout flags. The instance is remembered in .run/unleash.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict

from devstack.errors import ServiceError
from devstack.services.common import stop_or_status
from devstack.services.unleash import (
    STATE_FILE,
    UnleashService,
    bootstrap_flags,
    ensure_unleash,
    is_running,
    stop,
)


def _print(svc: UnleashService, fmt: str) -> None:
    if fmt == "env":
        for key, value in svc.env().items():
            print(f"export {key}={shlex.quote(value)}")
    else:
        print(json.dumps(asdict(svc), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.svc.unleash",
                                     description="Start/stop a local Unleash server.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--format", choices=["json", "env"], default="json",
                        help="env prints `export UNLEASH_…=…` lines for eval")
    parser.add_argument("--no-bootstrap", action="store_true",
                        help="do not create the rollout flags after start")
    args = parser.parse_args(argv)
    from rollout.ports import FlagError

    known = UnleashService.load(STATE_FILE)
    try:
        if args.action == "start":
            if known and is_running(known):
                svc = known
            else:
                if known:
                    stop(known)  # a dead instance of ours: drop its database and leftovers
                started = time.monotonic()
                svc = ensure_unleash()
                print(f"unleash: ready on {svc.url} in {time.monotonic() - started:.1f}s"
                      if svc.owned else f"unleash: using {svc.api_url} (UNLEASH_URL; not "
                      "started here, never stopped here)", file=sys.stderr)
                svc.save(STATE_FILE)
            if not args.no_bootstrap:
                for write in bootstrap_flags(svc):
                    print(f"unleash: {write}", file=sys.stderr)
            _print(svc, args.format)
        else:
            return stop_or_status(args.action, known, state_file=STATE_FILE, stop=stop,
                                  is_running=is_running,
                                  show=lambda svc: _print(svc, args.format))
    except (ServiceError, FlagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

