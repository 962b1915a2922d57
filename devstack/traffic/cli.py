"""`python -m scripts.traffic --url URL [--url URL …] (--token T | --jwt-secret S) [--rate R]
[--duration S]`: the traffic generator (generator.py) from the command line; prints what it
measured."""

from __future__ import annotations

import argparse
import asyncio

from devstack.auth import LocalIssuer
from devstack.traffic import generator
from devstack.traffic.generator import TrafficGenerator
from devstack.traffic.transport import load_client


async def _main(args: argparse.Namespace) -> int:
    credentials = LocalIssuer(args.jwt_secret) if args.jwt_secret else args.token
    generator = TrafficGenerator(args.url, credentials, seed=args.seed)
    async with load_client() as client:
        await generator.seed_notes(client)
        stats = await generator.run(client, rate=args.rate, duration=args.duration)
    print(f"queries={stats.queries} writes={stats.writes} errors={stats.errors} "
          f"shed={stats.shed} "
          f"p50={stats.p(0.5) * 1000:.0f}ms p95={stats.p(0.95) * 1000:.0f}ms "
          f"l1={dict(stats.l1)} l2={dict(stats.l2)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.traffic",
                                     description=generator.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, action="append",
                        help="service base URL; repeat for several replicas (round-robin)")
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--token", help="bearer token sent as it is (a JWT, or the service's "
                      "SERVICE_API_TOKEN)")
    auth.add_argument("--jwt-secret", help="the service's AUTH_JWT_SECRET: sign an HS256 JWT "
                      "for the generated workspaces")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    return asyncio.run(_main(parser.parse_args(argv)))

