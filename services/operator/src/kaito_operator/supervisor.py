"""Keep the operator running while the API server does not serve a resource it watches.

kopf ends the whole operator when a watch (or the list that starts it) is answered 404:
the API server does not serve that resource at the moment. That happens to a healthy
cluster: a restarted apiserver answers 404 for custom resources for a moment after it is
ready, and a CRD deleted and created again (a chart reinstalled, a CRD upgrade) is
unserved in between. :func:`supervise` runs the operator (one kopf run); when a run ends
that way it logs the cause, waits with an exponential backoff until ``served`` says the
operator's custom resources are served again, and starts a new run in the same process.
Any other end of a run (a stop, a fatal error) ends :func:`supervise` as it ended the run.

A new run lists every watched resource again and resumes every owner (an idempotent
reconcile each), as a restarted operator process would; what lives in the process (the
metrics, their endpoint) is kept by the startup handler across runs.
:func:`run_operator` is the operator so supervised: kopf with the configured controllers,
and the owner kinds' list answered as the test of "served".
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import kopf

from kaito_operator.handlers import build_registry
from kaito_operator.handlers.lifecycle import operator_client
from kaito_operator.handlers.owners import OWNERS
from kaito_operator.kube import RESOURCES
from kaito_operator.memo import OperatorMemo
from kaito_operator.settings import OperatorSettings

__all__ = ["Backoff", "is_not_served", "owners_served", "run_operator", "supervise"]

log = logging.getLogger(__name__)

#: kopf's text for an ``ERROR`` event in a watch stream (it carries the Status object).
_ERROR_EVENT_404 = re.compile(r"Error in the watch-stream: .*'code': 404\b")
#: Seconds between checks of ``stopping`` while waiting.
_SLICE = 0.25


@dataclass(frozen=True)
class Backoff:
    """Delays between checks whether the resources are served again."""

    first: float = 1.0
    """Seconds before the first check."""
    factor: float = 2.0
    """Each next delay is the last one times this."""
    limit: float = 30.0
    """The longest delay."""

    def delays(self) -> list[float]:
        """The delays until (and including) the first that reaches ``limit``."""
        delays = [min(self.first, self.limit)]
        while delays[-1] < self.limit:
            delays.append(min(delays[-1] * self.factor, self.limit))
        return delays


def is_not_served(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) is a 404 answer to a watch or list.

    kopf raises its API errors with the HTTP ``status`` as an attribute, and a watch
    stream's ``ERROR`` event as a ``WatchingError`` whose text holds the Status object;
    neither class is public, so both are recognised by what they carry.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "status", None) == 404:
            return True
        if _ERROR_EVENT_404.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


async def supervise(
    run: Callable[[], Awaitable[None]],
    served: Callable[[], Awaitable[bool]],
    *,
    backoff: Backoff = Backoff(),
    stopping: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``run`` until it ends other than by a resource not served (module docstring).

    ``served`` says whether the API server serves the watched custom resources again (an
    error while asking counts as no); ``stopping`` is checked before and after each wait,
    so that a stop asked for while waiting ends the wait.
    """
    while True:
        try:
            await run()
            return
        except Exception as exc:
            if not is_not_served(exc):
                raise
            log.warning(
                "a watched resource was answered 404 (the API server restarted, or a CRD "
                "was deleted): watching again once it is served; the cause: %s",
                exc,
            )
        if not await _wait_until_served(served, backoff, stopping, sleep):
            return
        log.warning("the watched custom resources are served again: restarting the watches")


async def _wait_until_served(
    served: Callable[[], Awaitable[bool]],
    backoff: Backoff,
    stopping: Callable[[], bool],
    sleep: Callable[[float], Awaitable[None]],
) -> bool:
    """Wait with ``backoff`` until ``served``; False when a stop came first."""
    delays = backoff.delays()
    attempt = 0
    while not stopping():
        delay = delays[min(attempt, len(delays) - 1)]
        attempt += 1
        while delay > 0 and not stopping():  # in slices: a stop ends the wait soon
            await sleep(min(delay, _SLICE))
            delay -= _SLICE
        if stopping():
            break
        try:
            if await served():
                return True
        except Exception as exc:  # the API server may not answer at all yet
            log.info("check %d whether the custom resources are served failed: %s", attempt, exc)
            continue
        log.info("check %d: the custom resources are not served yet", attempt)
    return False


def _owner_kinds(settings: OperatorSettings) -> list[tuple[str, str]]:
    """``(apiVersion, kind)`` of every owner kind the enabled controllers watch."""
    params: set[str] = set(settings.controllers)
    if "workspace" in params:
        params.add("inferenceset")
    kinds = {(r.group, r.version, r.plural): r for r in RESOURCES}
    return sorted(
        (kinds[OWNERS[param].resource].api_version, kinds[OWNERS[param].resource].kind)
        for param in params
    )


async def owners_served(settings: OperatorSettings) -> bool:
    """Whether the API server serves every owner kind the operator watches (a fresh client:
    the operator's own is closed with the run that ended)."""
    kube = operator_client(settings, kopf.OperatorSettings())
    try:
        for api_version, kind in _owner_kinds(settings):
            if not await kube.serves(api_version, kind):
                return False
        return True
    finally:
        await kube.aclose()


async def run_operator(
    settings: OperatorSettings,
    *,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    liveness_endpoint: str | None = None,
    backoff: Backoff = Backoff(),
) -> None:
    """The operator, cluster-wide, kept running through resources not served (module).

    Between runs SIGINT and SIGTERM end it (kopf's own handlers, installed by a run, are
    bound to that run); ``stop_flag`` ends it too.
    """
    memo = OperatorMemo(settings=settings)
    signalled = asyncio.Event()

    async def once() -> None:
        try:
            await kopf.operator(
                registry=build_registry(settings),
                clusterwide=True,
                standalone=True,
                memo=memo,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                liveness_endpoint=liveness_endpoint,
            )
        finally:
            if threading.current_thread() is threading.main_thread():
                loop = asyncio.get_running_loop()
                for number in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(number, signalled.set)

    def stopping() -> bool:
        return signalled.is_set() or (stop_flag is not None and stop_flag.is_set())

    await supervise(once, lambda: owners_served(settings), backoff=backoff, stopping=stopping)
