"""``kaito-ragengine serve``: run the service with uvicorn."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito-ragengine", description="KAITO RAG engine")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API (settings from KAITO_RAG_* env)")
    serve.add_argument("--host", help="interface to bind (default from settings: 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default from settings: 5000)")
    serve.add_argument("--persist-dir", help="snapshot root (default from settings: /mnt/data)")
    serve.add_argument("--log-level", help="log level (default: info)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``kaito-ragengine`` console script."""
    args = _parser().parse_args(argv)
    import uvicorn  # noqa: PLC0415

    from kaito_ragengine.app import create_app  # noqa: PLC0415
    from kaito_ragengine.settings import Settings  # noqa: PLC0415

    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "persist_dir": args.persist_dir,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
