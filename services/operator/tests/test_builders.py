"""Golden YAML tests for the pure builders; every built-in object is schema-validated.

Regenerate the files after an intended change with ``KAITO_UPDATE_GOLDEN=1 pytest ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kaito_operator.builders import inference, nodes, ragengine, services, tuning
from kaito_operator.reconcilers import plan
from kaito_sdk.api import RAGEngine, Workspace
from kaito_sdk.presets import resolve_preset
from kaito_sdk.skus import find_sku

UID = "11111111-2222-3333-4444-555555555555"
BUILT_IN = {"v1", "apps/v1", "batch/v1"}


def workspace(**body: Any) -> Workspace:
    meta = {"name": "ws1", "namespace": "team", "uid": UID, **body.pop("metadata", {})}
    return Workspace.from_manifest({"metadata": meta, **body})


def rag(**spec: Any) -> RAGEngine:
    meta = {"name": "rag1", "namespace": "team", "uid": UID}
    return RAGEngine.from_manifest({"metadata": meta, "spec": spec})


SELECTOR = {"labelSelector": {"matchLabels": {"apps": "ws1", "kaito.sh/workspace": "x"}}}


def tuning_cpu_urls() -> list[dict[str, Any]]:
    ws = workspace(
        resource=SELECTOR,
        tuning={
            "preset": {"name": "smollm2-135m-instruct"},
            "method": "lora",
            "input": {"urls": ["https://example.com/a.jsonl", "https://example.com/b.jsonl"]},
            "output": {"image": "registry.example.com/a:1", "imagePushSecret": "push"},
        },
    )
    plan = tuning.TuningPlan(
        preset=resolve_preset("smollm2-135m-instruct"),
        image="ghcr.io/kaito-py/kaito-tuning:0.1.0",
        config_map="ws1-training-config",
        output_dir="/mnt/results",
        gpus=None,
        revision="abc123",
    )
    return [tuning.tuning_config_map(ws, "training_config: {}\n"), tuning.tuning_job(ws, plan)]


def tuning_gpu_image_to_volume() -> list[dict[str, Any]]:
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", **SELECTOR},
        tuning={
            "preset": {"name": "phi-3-mini-128k-instruct"},
            "method": "qlora",
            "config": "my-config",
            "input": {"image": "registry.example.com/data:1", "imagePullSecrets": ["pull"]},
            "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "results"}}},
        },
    )
    plan = tuning.TuningPlan(
        preset=resolve_preset("phi-3-mini-128k-instruct"),
        image="ghcr.io/kaito-py/kaito-tuning:0.1.0",
        config_map="my-config",
        output_dir="/mnt/out",
        gpus=1,
        revision="def456",
    )
    return [tuning.tuning_job(ws, plan)]


def ragengine_remote_with_pvc() -> list[dict[str, Any]]:
    engine = rag(
        compute={"instanceType": "Standard_NC24ads_A100_v4", **SELECTOR},
        embedding={
            "remote": {"url": "https://embed.example.com/v1/embeddings", "accessSecret": "e"}
        },
        inferenceService={
            "url": "http://phi.team.svc/v1/chat/completions",
            "contextWindowSize": 4096,
        },
        storage={"persistentVolume": {"persistentVolumeClaim": "rag-pvc", "mountPath": "/data"}},
    )
    image = "ghcr.io/kaito-py/kaito-ragengine:0.1.0"
    return [services.service(engine), ragengine.ragengine_deployment(engine, image=image)]


def ragengine_local_retrieve_only() -> list[dict[str, Any]]:
    engine = rag(embedding={"local": {"modelID": "BAAI/bge-small-en-v1.5"}})
    image = "ghcr.io/kaito-py/kaito-ragengine:0.1.0"
    return [ragengine.ragengine_deployment(engine, image=image)]


def workspace_services_multinode() -> list[dict[str, Any]]:
    ws = workspace(resource=SELECTOR, inference={"preset": {"name": "qwen2.5-72b-instruct"}})
    return [services.service(ws, leader_only=True), services.headless_service(ws, ray=True)]


def node_provisioning() -> list[dict[str, Any]]:
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", **SELECTOR},
        inference={"preset": {"name": "phi-4"}},
    )
    node_class = nodes.NodeClassRef("karpenter.azure.com", "AKSNodeClass", "default")
    names = nodes.nodeclaim_names(ws, 2)
    return [
        nodes.nodepool(
            ws, instance_type="Standard_NC24ads_A100_v4", nodes=2, node_class=node_class
        ),
        *(
            nodes.nodeclaim(
                ws,
                name,
                instance_type="Standard_NC24ads_A100_v4",
                storage="108Gi",
                node_class=node_class,
            )
            for name in names
        ),
    ]


INFERENCE_IMAGE = "ghcr.io/kaito-py/kaito-inference:0.1.0"


def statefulset(ws: Workspace, config_text: str | None = None) -> dict[str, Any]:
    preset = plan.preset_of(ws)
    sku = find_sku(ws.resource.instance_type) if ws.resource.instance_type else None
    target = plan.node_count(ws, preset, sku=sku, config_text=config_text)
    inference_plan = plan.inference_plan(
        ws, preset, image=INFERENCE_IMAGE, target=target, sku=sku, config_text=config_text
    )
    return inference.inference_statefulset(ws, inference_plan)


def inference_cpu_transformers() -> list[dict[str, Any]]:
    ws = workspace(
        metadata={"annotations": {"kaito.sh/runtime": "transformers"}},
        resource=SELECTOR,
        inference={"preset": {"name": "smollm2-135m-instruct"}},
    )
    return [statefulset(ws)]


def inference_gpu_vllm_config_adapters_token() -> list[dict[str, Any]]:
    ws = workspace(
        metadata={"annotations": {"kaito.sh/performance-mode": "throughput"}},
        resource={"instanceType": "Standard_NC24ads_A100_v4", **SELECTOR},
        inference={
            "preset": {
                "name": "llama-3.1-8b-instruct",
                "presetOptions": {"modelAccessSecret": "hf-token"},
            },
            "config": "params",
            "adapters": [
                {"source": {"name": "a1", "image": "registry.example.com/a1:1"}},
                {"source": {"name": "a2", "volumeSource": {"configMap": {"name": "a2"}}}},
            ],
        },
    )
    return [statefulset(ws, "vllm:\n  max-model-len: 8192\n")]


def inference_multinode_vllm() -> list[dict[str, Any]]:
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", **SELECTOR},
        inference={"preset": {"name": "qwen2.5-72b-instruct"}},
    )
    return [statefulset(ws)]


def inference_template() -> list[dict[str, Any]]:
    template = {
        "spec": {"containers": [{"name": "llm", "image": "example.com/llm:1"}]},
    }
    ws = workspace(
        resource={"instanceType": "Standard_NC24ads_A100_v4", **SELECTOR},
        inference={"template": template},
    )
    return [statefulset(ws)]


CASES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "inference-cpu-transformers": inference_cpu_transformers,
    "inference-gpu-vllm-config-adapters-token": inference_gpu_vllm_config_adapters_token,
    "inference-multinode-vllm": inference_multinode_vllm,
    "inference-template": inference_template,
    "tuning-cpu-urls": tuning_cpu_urls,
    "tuning-gpu-image-to-volume": tuning_gpu_image_to_volume,
    "ragengine-remote-with-pvc": ragengine_remote_with_pvc,
    "ragengine-local-retrieve-only": ragengine_local_retrieve_only,
    "workspace-services-multinode": workspace_services_multinode,
    "node-provisioning": node_provisioning,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_output_matches_golden_and_schema(
    name: str,
    validate_k8s: Callable[[dict[str, Any]], None],
    check_golden: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    objects = CASES[name]()
    for obj in objects:
        if obj["apiVersion"] in BUILT_IN:
            validate_k8s(obj)
    check_golden(name, objects)


def test_reserved_selector_keys_never_reach_node_affinity() -> None:
    [job] = tuning_gpu_image_to_volume()
    terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "apps", "operator": "In", "values": ["ws1"]}]}]


def test_ragengine_refuses_what_the_service_cannot_do() -> None:
    engine = rag(embedding={"local": {"modelID": "m"}}, guardrails={"enabled": True})
    with pytest.raises(ragengine.UnsupportedSpecError, match=r"spec\.guardrails"):
        ragengine.ragengine_deployment(engine, image="x")


def test_ragengine_with_an_external_vector_db_runs_on_faiss() -> None:
    """KAITO admits any vectorDB engine; the service keeps vectors in FAISS (admission
    warns), so the Deployment is the same as without vectorDB."""
    plain = rag(embedding={"local": {"modelID": "m"}})
    with_db = rag(
        embedding={"local": {"modelID": "m"}},
        storage={"vectorDB": {"engine": "milvus", "url": "http://m:19530"}},
    )
    assert ragengine.ragengine_deployment(with_db, image="x") == ragengine.ragengine_deployment(
        plain, image="x"
    )


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    templates = [o["spec"].get("template", {}) for o in objects if "spec" in o]
    return [t["spec"] for t in templates if "containers" in t.get("spec", {})]


@pytest.mark.parametrize("name", sorted(CASES))
def test_our_containers_run_non_root_on_a_read_only_root(name: str) -> None:
    """Every container of our images: no privileges, read-only root, and an emptyDir at
    each path it writes (/tmp, the home directory with its caches); user images (a
    template, adapter or data pullers) keep what the user gave."""
    for pod in _pods(CASES[name]()):
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            ours = container["image"].startswith("ghcr.io/kaito-py/")
            security = container.get("securityContext")
            if not ours:
                assert security is None, container["name"]
                continue
            assert security == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            }
            writable = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            assert "emptyDir" in writable["/tmp"]
            assert "emptyDir" in writable["/home/kaito"]
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_a_ragengine_without_storage_persists_to_an_emptydir() -> None:
    [deployment] = ragengine_local_retrieve_only()
    pod = deployment["spec"]["template"]["spec"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data"]
    assert mount["mountPath"] == "/mnt/data"
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    with_pvc = ragengine_remote_with_pvc()[1]
    mounts = with_pvc["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts if m["name"] == "data"] == ["/data"]
