"""The RAGEngine Deployment (reference §6.2), configured only through the SDK's env contract."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kaito_operator.builders.common import (
    GPU_TOLERATIONS,
    TERMINATION_MESSAGE_POLICY,
    config_hash,
    harden,
    node_affinity,
    object_meta,
    selector_labels,
)
from kaito_sdk import labels
from kaito_sdk.api import RAGEngine
from kaito_sdk.contracts import ragengine as contract

__all__ = [
    "EMBEDDING_SECRET_KEY",
    "LLM_SECRET_KEY",
    "UnsupportedSpecError",
    "rag_config",
    "ragengine_deployment",
]

#: Key, inside ``spec.inferenceService.accessSecret``, of the LLM bearer token (KAITO's).
LLM_SECRET_KEY = "LLM_ACCESS_SECRET"  # noqa: S105 (a key name, not a secret)
#: Key, inside ``spec.embedding.remote.accessSecret``, of the embedding bearer token.
EMBEDDING_SECRET_KEY = "EMBEDDING_ACCESS_SECRET"  # noqa: S105 (a key name)
_COMMAND = "kaito-ragengine"


class UnsupportedSpecError(ValueError):
    """A RAGEngine field this implementation cannot serve (names the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _in_cluster(url: str | None) -> bool:
    host = urlsplit(url or "").hostname or ""
    return "." not in host or host.endswith((".svc", ".svc.cluster.local"))


def rag_config(engine: RAGEngine) -> tuple[contract.RagEngineConfig, contract.RagEngineSecrets]:
    """Translate the RAGEngine spec into the service's settings contract."""
    spec = engine.spec
    # spec.storage.vectorDB is not used: the service keeps vectors in FAISS (admission
    # warns about it, as KAITO admits any engine name).
    if spec.guardrails is not None and spec.guardrails.enabled:
        raise UnsupportedSpecError("spec.guardrails", "output guardrails are not supported")
    values: dict[str, Any] = {}
    secrets: dict[str, contract.SecretKeyRef] = {}
    local, remote = spec.embedding.local, spec.embedding.remote
    if local is not None:
        if local.image is not None:
            raise UnsupportedSpecError(
                "spec.embedding.local.image", "use modelID; embedding images are not supported"
            )
        if local.model_id:
            values["embedding_model_id"] = local.model_id
    elif remote is not None:
        values.update(embedding_source="remote", embedding_url=remote.url)
        if remote.access_secret:
            secrets["embedding_access_secret"] = contract.SecretKeyRef(
                name=remote.access_secret, key=EMBEDDING_SECRET_KEY
            )
    inference = spec.inference_service
    if inference is not None:
        values.update(
            llm_inference_url=inference.url, llm_context_window=inference.context_window_size
        )
        if inference.access_secret:
            secrets["llm_access_secret"] = contract.SecretKeyRef(
                name=inference.access_secret, key=LLM_SECRET_KEY
            )
    if spec.storage is not None and spec.storage.persistent_volume is not None:
        mount = spec.storage.persistent_volume.mount_path or contract.DEFAULT_PERSIST_DIR
        values["persist_dir"] = f"{mount.rstrip('/')}/{engine.metadata.name}"
    urls = [values.get("embedding_url"), values.get("llm_inference_url")]
    if any(url and _in_cluster(url) for url in urls):
        values["allow_private_urls"] = True
    return contract.RagEngineConfig(**values), contract.RagEngineSecrets(**secrets)


#: Seconds the pod gets to snapshot its indexes after SIGTERM.
SHUTDOWN_GRACE_SECONDS = 120


def _probe(failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": 10,
        "failureThreshold": failures,
    }


def ragengine_deployment(engine: RAGEngine, *, image: str) -> dict[str, Any]:
    """The Deployment ``<name>``: one replica of ``kaito-ragengine`` (no surge: one writer)."""
    config, secrets = rag_config(engine)
    env = contract.env_vars(config, secrets)
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    storage = engine.spec.storage
    if storage is not None and storage.persistent_volume is not None:
        claim = storage.persistent_volume.persistent_volume_claim
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim}})
        mount = storage.persistent_volume.mount_path or contract.DEFAULT_PERSIST_DIR
        mounts.append({"name": "data", "mountPath": mount})
    container: dict[str, Any] = {
        "name": "ragengine",
        "image": image,
        "command": [_COMMAND, "serve"],
        "ports": [{"name": "http", "containerPort": config.port}],
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
        "startupProbe": _probe(30),
        "readinessProbe": _probe(3),
        "livenessProbe": _probe(3),
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    # On SIGTERM the service snapshots every index before it exits: give it the time.
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": SHUTDOWN_GRACE_SECONDS,
    }
    # Without a volume the indexes persist to an emptyDir (kept across container restarts).
    scratch = {} if mounts else {"data": contract.DEFAULT_PERSIST_DIR}
    harden(pod_spec, [container], writable=scratch)
    compute = engine.spec.compute
    if compute is not None:
        affinity = node_affinity(compute.label_selector)
        if affinity is not None:
            pod_spec["affinity"] = affinity
        if compute.instance_type:
            pod_spec["tolerations"] = [dict(t) for t in GPU_TOLERATIONS]
    revision = {labels.ANNOTATION_RAGENGINE_REVISION: config_hash(env, volumes)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(engine, str(engine.metadata.name)),
        "spec": {
            "replicas": 1,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "selector": {"matchLabels": selector_labels(engine)},
            "template": {
                "metadata": {"labels": selector_labels(engine), "annotations": revision},
                "spec": pod_spec,
            },
        },
    }
