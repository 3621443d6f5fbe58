"""``kaito-ragengine serve``: run the service with uvicorn, failing fast on fatal startup errors.

A setting that does not validate, a persistence root that cannot be used, a port that is
taken, a missing dependency or an embedding model that cannot load ends the process
within seconds with exit code 1 and ``kaito-ragengine: fatal: <cause>`` as the last line
on stderr. SIGTERM (or SIGINT) first makes the service refuse writes not yet applied
(503), then uvicorn drains the connections, the lifespan snapshots every index and the
process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["main"]

log = logging.getLogger("kaito_ragengine")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito-ragengine", description="KAITO RAG engine")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API (settings from KAITO_RAG_* env)")
    serve.add_argument("--host", help="interface to bind (default from settings: 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default from settings: 5000)")
    serve.add_argument("--persist-dir", help="snapshot root (default from settings: /mnt/data)")
    serve.add_argument("--log-level", help="log level (default: info)")
    return parser


def _fatal(cause: str) -> NoReturn:
    """Print the cause as the last line on stderr and exit 1."""
    sys.stderr.flush()
    print(f"kaito-ragengine: fatal: {cause}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _check_persist_dir(path: Path) -> None:
    """The persistence root must be (or become) a directory this process can use."""
    if path.exists() and not path.is_dir():
        _fatal(f"persistence directory {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fatal(f"persistence directory {path} cannot be created: {exc.strerror or exc}")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        _fatal(f"persistence directory {path} is not readable and writable by this process")
    try:
        list(path.iterdir())
    except OSError as exc:
        _fatal(f"persistence directory {path} cannot be read: {exc.strerror or exc}")


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket before anything slow, so a taken port fails at once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        _fatal(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock


def _exit_cleanly_after_stop_signals() -> None:
    """Make a graceful stop end with exit code 0.

    uvicorn handles SIGINT/SIGTERM itself, and once it has shut down it raises the signal
    again with the handlers it found; these handlers turn that into ``SystemExit(0)``, so
    a pod stopped on purpose ends ``Completed`` and Ctrl-C ends quietly, not by the signal.
    """

    def exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, exit_cleanly)


def _server(app: FastAPI, config: Any) -> Any:
    """A uvicorn server whose SIGTERM/SIGINT handler first stops the app's writes."""
    import uvicorn  # noqa: PLC0415

    class DrainingServer(uvicorn.Server):
        """Tells the RAG service to refuse unapplied writes as soon as a signal arrives."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            rag = getattr(app.state, "rag", None)
            if rag is not None:
                rag.begin_shutdown()
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``kaito-ragengine`` console script."""
    args = _parser().parse_args(argv)
    from pydantic import ValidationError  # noqa: PLC0415

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
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        _fatal(f"invalid settings (KAITO_RAG_* environment or flags): {problems}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _check_persist_dir(Path(settings.persist_dir))
    sock = _bind(settings.host, settings.port)

    try:
        import uvicorn  # noqa: PLC0415

        from kaito_ragengine.app import create_app  # noqa: PLC0415
    except ImportError as exc:
        _fatal(f"missing dependency: {exc}")

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
    )
    server = _server(app, config)
    log.info("listening on http://%s:%d", settings.host, settings.port)
    _exit_cleanly_after_stop_signals()
    # SystemExit: uvicorn exits 3 when the lifespan fails; 0 after a stop signal (above).
    with contextlib.suppress(SystemExit):
        asyncio.run(server.serve(sockets=[sock]))
    if not server.started:
        cause = getattr(app.state, "startup_error", None)
        _fatal(str(cause) if cause is not None else "the application did not start")


if __name__ == "__main__":
    main()
