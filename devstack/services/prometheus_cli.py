"""`python -m scripts.svc.prometheus start|configure|stop|status [--target JOB=HOST:PORT ...]
[--rules FILE ...] [--alertmanager HOST:PORT] [--scrape-interval 15s]`: the Prometheus
starter for people; the instance it started is remembered in .run/prometheus.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict

from devstack.errors import ServiceError
from devstack.services.common import Service, stop_or_status
from devstack.services.prometheus import (
    STATE_FILE,
    PrometheusService,
    ensure_prometheus,
    is_running,
    reconfigure,
    stop,
)


def _parse_targets(values: Sequence[str]) -> dict[str, list[str]]:
    targets: dict[str, list[str]] = {}
    for value in values:
        job, sep, address = value.partition("=")
        if not sep or not job or not address:
            raise SystemExit(f"--target wants JOB=HOST:PORT, got {value!r}")
        targets.setdefault(job, []).append(address)
    return targets


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    """`15s`, `500ms`, `1m`, or a bare number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise SystemExit(f"bad duration {text!r}: use e.g. 15s, 500ms, 1m")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.svc.prometheus",
                                     description="Start/stop/reconfigure a local Prometheus.")
    parser.add_argument("action", choices=["start", "configure", "stop", "status"])
    parser.add_argument("--target", action="append", default=[], metavar="JOB=HOST:PORT",
                        help="scrape target (repeatable; several per job allowed)")
    parser.add_argument("--rules", action="append", default=[], metavar="FILE",
                        help="rule file to load (repeatable)")
    parser.add_argument("--alertmanager", metavar="HOST:PORT")
    parser.add_argument("--scrape-interval", default="15s")
    parser.add_argument("--evaluation-interval")
    parser.add_argument("--format", choices=["json", "env"], default="json")
    args = parser.parse_args(argv)

    known = PrometheusService.load(STATE_FILE)
    try:
        if args.action == "start":
            if known and is_running(known):
                svc: Service = known
            else:
                if known:
                    stop(known)
                svc = ensure_prometheus(
                    targets=_parse_targets(args.target),
                    scrape_interval=_seconds(args.scrape_interval),
                    evaluation_interval=(_seconds(args.evaluation_interval)
                                         if args.evaluation_interval else None),
                    rule_files=args.rules, alertmanager=args.alertmanager,
                )
                svc.save(STATE_FILE)
            _print(svc, args.format)
        elif args.action == "configure":
            if not known or not is_running(known):
                print("error: no running prometheus started here", file=sys.stderr)
                return 1
            svc = reconfigure(
                known,
                targets=_parse_targets(args.target) if args.target else None,
                scrape_interval=_seconds(args.scrape_interval),
                evaluation_interval=(_seconds(args.evaluation_interval)
                                     if args.evaluation_interval else None),
                rule_files=args.rules or None, alertmanager=args.alertmanager,
            )
            _print(svc, args.format)
        else:
            return stop_or_status(args.action, known, state_file=STATE_FILE, stop=stop,
                                  is_running=is_running,
                                  show=lambda svc: _print(svc, args.format))
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(svc: Service, fmt: str) -> None:
    if fmt == "env":
        print(f"export PROMETHEUS_URL={svc.url}")
    else:
        print(json.dumps(asdict(svc), indent=2))

