"""The ceiling for the L1-hit benchmark: a bare FastAPI endpoint doing one Redis GET.

It answers the service's query route (`POST /v1/workspaces/{workspace_id}/query`) with one
`GET` of a fixed key holding a payload the size of a real L1 entry, returned as JSON. No body
validation, no flags, no metrics, no Lua: what is left is HTTP, routing, one Redis round trip
and JSON, i.e. the least any implementation of an L1 hit has to do. It is served exactly as
`python -m app` is (`app.serve`: uvloop, httptools, no access log, one worker or N on
SO_REUSEPORT sockets) and with the same Redis client configuration (`app.main.build_redis`).

    python -m bench.ceiling_app --port 8101 --redis-url redis://127.0.0.1:6379/0 --key K \
        [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from app.main import build_redis
from app.serve import Listen, reuse_port_socket, run_uvicorn, serve_workers
from app.settings import Settings


def create_ceiling_app(redis_url: str, key: str, redis_timeout_seconds: float) -> FastAPI:
    settings = Settings(_env_file=None, redis_url=redis_url,
                        redis_timeout_seconds=redis_timeout_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis: Redis = build_redis(settings)
        app.state.redis = redis
        try:
            yield
        finally:
            await redis.aclose()

    app = FastAPI(title="L1-hit ceiling", lifespan=lifespan)

    @app.post("/v1/workspaces/{workspace_id}/query")
    async def query(workspace_id: str, request: Request) -> JSONResponse:
        redis: Redis = request.app.state.redis
        value = await redis.get(key)
        return JSONResponse({"answer": value.decode() if isinstance(value, bytes) else value})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--redis-timeout", type=float, default=Settings.model_fields[
        "redis_timeout_seconds"].default, help="seconds; as REDIS_TIMEOUT_SECONDS of the service")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    listen = Listen(args.host, args.port)
    if args.workers > 1:
        # The worker must be found by module name in a spawned process, not as __main__.
        from bench import ceiling_app  # noqa: PLW0406 - this module, by its own name

        worker = functools.partial(ceiling_app.run_ceiling_worker, args.redis_url, args.key,
                                   args.redis_timeout)
        return serve_workers(worker, listen, args.workers)
    run_uvicorn(create_ceiling_app(args.redis_url, args.key, args.redis_timeout), listen)
    return 0


def run_ceiling_worker(redis_url: str, key: str, redis_timeout: float, listen: Listen) -> None:
    run_uvicorn(create_ceiling_app(redis_url, key, redis_timeout), listen,
                reuse_port_socket(listen))


if __name__ == "__main__":
    sys.exit(main())
