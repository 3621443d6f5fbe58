"""A watch that expires (410 Gone) on a real control plane: the operator relists and goes on.

The operator's Workspace watch resumes after a disconnect from the last resourceVersion it
saw. Here that version is made unservable for real: other objects are written after it,
etcd is compacted past it with ``etcdctl``, and the apiserver is restarted (its new watch
cache starts at etcd's current revision). The resumed watch is answered 410 Gone; the
operator must relist and reconcile a Workspace created afterwards, in the same process.

The operators are paused (SIGSTOP) while the apiserver restarts and resumed once it
serves our CRDs again: for a moment after ``/readyz`` a restarted 1.20 apiserver answers
404 for custom resources, and an operator whose watch gets that 404 starts its watches
over with a fresh list (``test_unserved_resources.py``), which would bypass the 410 this
test is about.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.parse
from typing import Any

import pytest

pytestmark = pytest.mark.k8s

WORKSPACES = "/apis/kaito.sh/v1beta1/workspaces"
#: Every custom resource the two operators watch.
WATCHED = [WORKSPACES, "/apis/kaito.sh/v1beta1/inferencesets", "/apis/kaito.sh/v1beta1/ragengines"]
#: kopf's line when a watch stream is answered 410 Gone and starts over with a list.
RESTARTED = "Restarting the watch-stream for workspaces.v1beta1.kaito.sh cluster-wide."


def etcdctl(etcd_url: str, *args: str) -> str:
    """Run ``etcdctl`` (API v3) against the control plane's etcd; its stdout."""
    result = subprocess.run(
        ["etcdctl", f"--endpoints={etcd_url}", *args],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, f"etcdctl {args}: {result.stderr}"
    return result.stdout


def reconciled(cluster: Any, namespace: str, name: str) -> bool:
    """The Workspace's StatefulSet exists and its status carries InferenceReady."""
    workspace = cluster.get(f"/apis/kaito.sh/v1beta1/namespaces/{namespace}/workspaces/{name}")
    kinds = {c["type"] for c in ((workspace or {}).get("status") or {}).get("conditions", [])}
    statefulset = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}")
    return statefulset is not None and "InferenceReady" in kinds


def test_an_expired_workspace_watch_is_relisted_and_new_workspaces_reconciled(
    operator: Any,
    ragengine_operator: Any,
    cluster: Any,
    namespace: str,
    eventually: Any,
    cpu_workspace: Any,
) -> None:
    cluster.require_local("etcd (etcdctl compact) and a restart of the apiserver")
    local = cluster.local
    assert cluster.apply(cpu_workspace(namespace, "before")).returncode == 0
    eventually(lambda: reconciled(cluster, namespace, "before"), what="'before' reconciled")

    # Every Workspace event so far, the operator's watch position included, is at or
    # below this revision (a list reads etcd's current one).
    seen = cluster.get(WORKSPACES)["metadata"]["resourceVersion"]
    for index in range(3):  # writes of other kinds move etcd's revision past it
        cluster.send(
            "POST",
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"metadata": {"name": f"after-the-watch-{index}"}, "data": {"n": str(index)}},
        )
    (status,) = json.loads(etcdctl(local.etcd_url, "endpoint", "status", "--write-out=json"))
    revision = int(status["Status"]["header"]["revision"])
    assert revision > int(seen)
    etcdctl(local.etcd_url, "compact", str(revision))
    log_before = len(operator.log.read_text(errors="replace"))
    pid = operator.process.pid

    paused = [operator.process.pid, ragengine_operator.process.pid]
    for paused_pid in paused:
        os.kill(paused_pid, signal.SIGSTOP)
    try:
        cluster.restart_apiserver()
        eventually(
            lambda: all(cluster.get(path) is not None for path in WATCHED),
            within=60,
            what="the restarted apiserver serves the custom resources",
        )
        # The apiserver can no longer serve a watch from that position: 410 Gone.
        query = urllib.parse.urlencode(
            {"watch": "true", "resourceVersion": seen, "timeoutSeconds": 5}
        )
        event = local.request("GET", f"{WORKSPACES}?{query}")
        assert event["type"] == "ERROR", event
        assert event["object"]["code"] == 410, event
        assert "too old resource version" in event["object"]["message"], event
    finally:
        for paused_pid in paused:
            os.kill(paused_pid, signal.SIGCONT)
    # The operator's own watch got the same answer and started over with a list.
    eventually(
        lambda: RESTARTED in operator.log.read_text(errors="replace")[log_before:],
        within=120,
        what="the operator's Workspace watch answered 410 and restarted",
    )

    assert cluster.apply(cpu_workspace(namespace, "after")).returncode == 0
    eventually(
        lambda: reconciled(cluster, namespace, "after"), within=120, what="'after' reconciled"
    )
    assert operator.process.poll() is None
    assert operator.process.pid == pid, "the operator was restarted"
    assert operator.rbac_denials() == []
