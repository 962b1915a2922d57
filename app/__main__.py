"""`python -m app [--host H] [--port P]`: run the service with settings from the environment."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from app.logs import configure_logging
from app.main import ConfigurationError, create_app
from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        configure_logging(settings.log_format, settings.log_level)
        app = create_app(settings)
    except (ValidationError, ConfigurationError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False,
                loop="uvloop", http="httptools")
    return 0


if __name__ == "__main__":
    sys.exit(main())
