"""`python -m app [--host H] [--port P] [--workers N]`: run the service with settings from the
environment, in this process or in N worker processes sharing the port (app/serve.py)."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from app.main import ConfigurationError, configure_service_logging, create_app, run_worker
from app.serve import Listen, run_uvicorn, serve_workers
from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the port (SO_REUSEPORT); default 1")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        settings = Settings()
        configure_service_logging(settings)
        app = create_app(settings)  # also in the supervisor: a bad setting stops it here
    except (ValidationError, ConfigurationError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    listen = Listen(args.host, args.port)
    if args.workers == 1:
        run_uvicorn(app, listen)
        return 0
    return serve_workers(run_worker, listen, args.workers)


if __name__ == "__main__":
    sys.exit(main())
