"""What kopf's indexes keep of each owner and child (the operator's informer cache)."""

from __future__ import annotations

import kopf
import pytest

from kaito_operator.handlers import owners

MANAGED = [{"manager": "kaito-operator", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]


@pytest.mark.asyncio
async def test_indexed_bodies_leave_out_managed_fields() -> None:
    raw = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "ws",
            "namespace": "default",
            "generation": 2,
            "labels": {"kaito.sh/workspace": "ws"},
            "managedFields": MANAGED,
        },
        "spec": {"replicas": 1},
        "status": {"readyReplicas": 1},
    }
    resource = kopf.Resource("apps", "v1", "statefulsets", kind="StatefulSet")
    child = await owners.index_child(body=kopf.Body(raw), resource=resource, param="workspace")
    [(key, (kind, obj))] = child.items()
    assert (key, kind) == (("default", "ws"), "StatefulSet")
    assert "managedFields" not in obj["metadata"]
    assert obj["metadata"]["generation"] == 2
    assert (obj["spec"], obj["status"]) == (raw["spec"], raw["status"])
    owner = await owners.index_owner(body=kopf.Body(raw))
    assert "managedFields" not in owner["default", "ws"]["metadata"]
    assert raw["metadata"]["managedFields"] == MANAGED  # kopf's body is left as it was
