"""``kaito-operator``: run the controllers the settings enable, cluster-wide.

A watched custom resource that the API server stops serving for a while (a restart, a
CRD deleted and created again) does not end the process: the operator waits until it is
served and starts watching again (:mod:`kaito_operator.supervisor`).

A fatal error (settings that do not validate, no API server credentials, a startup
handler that fails for good) ends the process with exit code 1 and
``kaito-operator: fatal: <cause>`` as the last line on stderr, so a crash-looping pod
shows why.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

from kaito_operator.settings import OperatorSettings
from kaito_operator.supervisor import run_operator

__all__ = ["main"]


def _root_cause(error: BaseException) -> BaseException:
    """The innermost ``__cause__`` (kopf wraps a failed startup handler's error)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _fatal(cause: object) -> SystemExit:
    print(f"kaito-operator: fatal: {cause}", file=sys.stderr, flush=True)
    return SystemExit(1)


def main() -> None:
    """Entry point of the ``kaito-operator`` console script."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise _fatal(f"invalid settings (KAITO_OPERATOR_* environment): {problems}") from None
    try:
        asyncio.run(
            run_operator(
                settings, liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
            )
        )
    except KeyboardInterrupt:
        return
    except Exception as exc:  # whatever stops the operator is reported as its cause
        raise _fatal(_root_cause(exc)) from None


if __name__ == "__main__":
    main()
