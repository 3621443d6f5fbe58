"""Version gating of newer API fields."""

from __future__ import annotations

import pytest

from kaito_operator.builders import inference
from kaito_operator.builders.common import NEWEST, OLDEST_SUPPORTED, KubeVersion
from kaito_operator.reconcilers import plan
from kaito_sdk.api import Workspace

WORKSPACE = Workspace.from_manifest(
    {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "namespace": "default", "uid": "u-1"},
        "resource": {"labelSelector": {"matchLabels": {"apps": "ws"}}},
        "inference": {"preset": {"name": "smollm2-135m-instruct"}},
    }
)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"major": "1", "minor": "20", "gitVersion": "v1.20.2"}, KubeVersion(1, 20)),
        ({"major": "1", "minor": "28+", "gitVersion": "v1.28.3-eks"}, KubeVersion(1, 28)),
    ],
)
def test_version_is_read_from_the_version_endpoint(
    info: dict[str, str], expected: KubeVersion
) -> None:
    assert KubeVersion.from_version_info(info) == expected


def test_a_body_without_a_version_is_refused() -> None:
    with pytest.raises(ValueError, match="not a /version answer"):
        KubeVersion.from_version_info({"kind": "Status"})


def statefulset_spec(server: KubeVersion) -> dict[str, object]:
    preset = plan.preset_of(WORKSPACE)
    inference_plan = plan.inference_plan(
        WORKSPACE, preset, image="img:1", target=1, sku=None, config_text=None
    )
    spec: dict[str, object] = inference.inference_statefulset(
        WORKSPACE, inference_plan, server=server
    )["spec"]
    return spec


def test_pvc_retention_policy_only_for_servers_that_have_it() -> None:
    assert KubeVersion(1, 20) == OLDEST_SUPPORTED
    assert "persistentVolumeClaimRetentionPolicy" not in statefulset_spec(KubeVersion(1, 20))
    assert "persistentVolumeClaimRetentionPolicy" not in statefulset_spec(KubeVersion(1, 22))
    for server in (KubeVersion(1, 23), KubeVersion(1, 37), NEWEST):
        assert statefulset_spec(server)["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Delete",
            "whenScaled": "Retain",
        }
