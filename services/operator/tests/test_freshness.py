"""Which child events need a status recompute (the versions each recompute read)."""

from __future__ import annotations

from typing import Any

from kaito_operator.reconcilers.freshness import (
    ChildEvent,
    ChildVersions,
    OwnerViews,
    seen_children,
)

KEY = ("Workspace", "default", "ws")


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


def event(kind: str, name: str, version: str, *, deleted: bool = False) -> ChildEvent:
    return ChildEvent.of(kind, obj(name, version), deleted=deleted)


def recompute(versions: ChildVersions, *children: tuple[str, Any]) -> bool:
    versions.started(KEY)
    return versions.finished(KEY, seen_children(children))


def test_unknown_owner_needs_a_recompute() -> None:
    assert ChildVersions().needs_recompute(KEY, event("StatefulSet", "ws", "5"))


def test_a_version_the_last_recompute_read_needs_none() -> None:
    versions = ChildVersions()
    assert not recompute(versions, ("StatefulSet", obj("ws", "5")), ("Pod", obj("ws-0", "7")))
    assert not versions.needs_recompute(KEY, event("StatefulSet", "ws", "5"))
    assert not versions.needs_recompute(KEY, event("Pod", "ws-0", "7"))
    assert versions.needs_recompute(KEY, event("StatefulSet", "ws", "6"))
    assert versions.needs_recompute(KEY, event("Pod", "ws-1", "8"))
    # Same name, another kind: not the object that was read.
    assert versions.needs_recompute(KEY, event("Job", "ws", "5"))


def test_deletions_matter_only_for_children_that_were_read() -> None:
    versions = ChildVersions()
    recompute(versions, ("StatefulSet", obj("ws", "5")), ("StatefulSet", None))
    assert versions.needs_recompute(KEY, event("StatefulSet", "ws", "9", deleted=True))
    assert not versions.needs_recompute(KEY, event("Pod", "ws-0", "9", deleted=True))


def test_events_during_a_recompute_are_checked_against_what_it_read() -> None:
    versions = ChildVersions()
    versions.started(KEY)
    assert not versions.needs_recompute(KEY, event("StatefulSet", "ws", "5"))
    assert not versions.finished(KEY, seen_children([("StatefulSet", obj("ws", "5"))]))

    versions.started(KEY)
    assert not versions.needs_recompute(KEY, event("StatefulSet", "ws", "6"))
    # The recompute read the older version: the event still needs one.
    assert versions.finished(KEY, seen_children([("StatefulSet", obj("ws", "5"))]))


def test_a_failed_recompute_leaves_every_event_needing_one() -> None:
    versions = ChildVersions()
    recompute(versions, ("StatefulSet", obj("ws", "5")))
    versions.started(KEY)
    assert not versions.needs_recompute(KEY, event("StatefulSet", "ws", "5"))
    assert versions.finished(KEY, None)
    assert versions.needs_recompute(KEY, event("StatefulSet", "ws", "5"))


def test_overlapping_recomputes_let_the_last_one_decide() -> None:
    versions = ChildVersions()
    versions.started(KEY)
    versions.started(KEY)
    assert not versions.needs_recompute(KEY, event("Pod", "ws-0", "3"))
    assert not versions.finished(KEY, seen_children([]))
    assert not versions.finished(KEY, seen_children([("Pod", obj("ws-0", "3"))]))
    assert not versions.needs_recompute(KEY, event("Pod", "ws-0", "3"))


def test_an_owner_view_is_used_until_the_operator_knows_a_version_it_does_not_show() -> None:
    views = OwnerViews()
    assert views.current(KEY) is None  # no view: read the API
    view = obj("ws", "10")
    views.track(KEY, view)
    assert views.current(KEY) == view
    views.saw(KEY, obj("ws", "11"))  # the operator wrote version 11: the view lags
    assert views.current(KEY) is None
    view["metadata"]["resourceVersion"] = "11"  # kopf delivered it
    assert views.current(KEY) == view
    views.distrust(KEY)  # a periodic resync reads the API
    assert views.current(KEY) is None


def test_a_recreated_owner_keeps_its_new_view() -> None:
    views = OwnerViews()
    old, new = obj("ws", "1"), obj("ws", "7")
    views.track(KEY, old)
    views.track(KEY, new)
    views.untrack(KEY, old)  # the old daemon ends after the new one started
    assert views.current(KEY) == new
    views.untrack(KEY, new)
    assert views.current(KEY) is None
