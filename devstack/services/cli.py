"""`python -m scripts.svc start|stop|status NAME`: the same starters the tests use.

Started services are remembered in .run/NAME.json; `stop` stops only a process we started.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from devstack.errors import ServiceError
from devstack.paths import RUN_DIR
from devstack.services import (
    alertmanager,
    postgres,
    prometheus,
    redis,
    redis_cluster,
    redis_exporter,
    redis_sentinel,
    unleash,
)
from devstack.services.common import Service

STARTERS = {
    "redis": redis.ensure_redis, "postgres": postgres.ensure_postgres,
    "unleash": unleash.ensure_unleash, "prometheus": prometheus.ensure_prometheus,
    "redis_exporter": redis_exporter.ensure_redis_exporter,
    "alertmanager": alertmanager.ensure_alertmanager,
    "redis_cluster": redis_cluster.ensure_redis_cluster,
    "redis_sentinel": redis_sentinel.ensure_redis_sentinel,
}
STOPPERS = {"redis": redis.stop, "postgres": postgres.stop, "unleash": unleash.stop,
            "prometheus": prometheus.stop, "redis_exporter": redis_exporter.stop,
            "alertmanager": alertmanager.stop, "redis_cluster": redis_cluster.stop,
            "redis_sentinel": redis_sentinel.stop}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.svc")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("name", choices=sorted(STARTERS))
    args = parser.parse_args(argv)
    state_file = RUN_DIR / f"{args.name}.json"
    known = Service.load(state_file)
    try:
        if args.action == "start":
            if known and known.owned and known.process_alive():
                print(json.dumps(asdict(known)))
                return 0
            service = STARTERS[args.name]()
            service.save(state_file)
            print(json.dumps(asdict(service)))
        elif args.action == "stop":
            if known:
                STOPPERS[args.name](known)
                state_file.unlink(missing_ok=True)
        else:
            print(json.dumps(asdict(known)) if known else "{}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

