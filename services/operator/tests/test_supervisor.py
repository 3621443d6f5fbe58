"""The supervisor: which ends of a kopf run are retried, the backoff, a stop while waiting."""

from __future__ import annotations

import pytest

from kaito_operator.supervisor import Backoff, is_not_served, supervise


class ApiAnswerError(Exception):
    """Stands in for kopf's API errors: they carry the HTTP status as ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"answered {status}")
        self.status = status


class WatchingError(Exception):
    """Stands in for kopf's error for an ``ERROR`` event in a watch stream."""


def test_what_counts_as_not_served() -> None:
    assert is_not_served(ApiAnswerError(404))
    assert not is_not_served(ApiAnswerError(403))
    assert not is_not_served(RuntimeError("boom"))
    event = {"kind": "Status", "code": 404, "reason": "NotFound"}
    assert is_not_served(WatchingError(f"Error in the watch-stream: {event}"))
    gone = {"kind": "Status", "code": 4040}
    assert not is_not_served(WatchingError(f"Error in the watch-stream: {gone}"))
    wrapped = RuntimeError("Event processing has failed")  # kopf wraps a worker's error
    wrapped.__cause__ = ApiAnswerError(404)
    assert is_not_served(wrapped)


def test_backoff_doubles_up_to_its_limit() -> None:
    assert Backoff(first=1, factor=2, limit=30).delays() == [1, 2, 4, 8, 16, 30]
    assert Backoff(first=5, limit=2).delays() == [2]


class Script:
    """A run and a ``served`` check that follow a script, and a clock that only counts."""

    def __init__(self, runs: list[BaseException | None], answers: list[bool | Exception]):
        self.runs = runs
        self.answers = answers
        self.ran = 0
        self.checks = 0
        self.slept = 0.0
        self.stop_after: float | None = None

    async def run(self) -> None:
        outcome = self.runs[self.ran]
        self.ran += 1
        if outcome is not None:
            raise outcome

    async def served(self) -> bool:
        answer = self.answers[self.checks]
        self.checks += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds

    def stopping(self) -> bool:
        return self.stop_after is not None and self.slept >= self.stop_after


@pytest.mark.asyncio
async def test_a_run_answered_404_runs_again_once_served_with_backoff() -> None:
    script = Script([ApiAnswerError(404), None], [False, ConnectionError("refused"), True])
    await supervise(
        script.run,
        script.served,
        backoff=Backoff(first=1, factor=2, limit=3),
        stopping=script.stopping,
        sleep=script.sleep,
    )
    assert script.ran == 2
    assert script.checks == 3
    assert script.slept == pytest.approx(1 + 2 + 3)


@pytest.mark.asyncio
async def test_other_errors_end_it_at_once() -> None:
    script = Script([ApiAnswerError(403)], [])
    with pytest.raises(ApiAnswerError):
        await supervise(script.run, script.served, sleep=script.sleep)
    assert (script.ran, script.checks, script.slept) == (1, 0, 0)


@pytest.mark.asyncio
async def test_a_stop_while_waiting_ends_it() -> None:
    script = Script([ApiAnswerError(404)], [False] * 10)
    script.stop_after = 2.0
    await supervise(
        script.run,
        script.served,
        backoff=Backoff(first=1, factor=1, limit=1),
        stopping=script.stopping,
        sleep=script.sleep,
    )
    assert script.ran == 1
    assert script.checks == 1  # after the first second; the stop came during the second
