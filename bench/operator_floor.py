"""The floor under ``operator_scale.py``: the same children made by a minimal controller.

Run by ``operator_scale.py --floor`` in place of the operator (same ServiceAccount, same
control plane, same Workspaces): one process that watches the benchmark's Workspaces and,
for each new one, server-side-applies the same three children the operator would (both
Services and the StatefulSet, built once per kind by the operator's own builders and
copied per Workspace) at once, then writes one status with merge patch. Four requests
per Workspace, no framework, no finalizer, no reads: what the control plane itself takes
to create them on this machine, so the operator's numbers can be read against it.

    python bench/operator_floor.py --kubeconfig FILE --health-port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml
from operator_cluster import NAMESPACE, workspace

from kaito_operator.builders import inference as inference_builders
from kaito_operator.builders import services as service_builders
from kaito_operator.builders.common import KubeVersion
from kaito_operator.reconcilers import plan
from kaito_operator.settings import OperatorSettings
from kaito_sdk.api import Workspace
from kaito_sdk.images import image_for
from kaito_sdk.skus import find_sku

#: The name the per-kind templates are built for (replaced by each Workspace's name).
TEMPLATE = "ws-floor-template"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
PATHS = {
    "Service": f"/api/v1/namespaces/{NAMESPACE}/services",
    "StatefulSet": f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets",
}
WORKSPACES = f"/apis/kaito.sh/v1beta1/namespaces/{NAMESPACE}/workspaces"


def children_template(gpu: bool, server: KubeVersion) -> str:
    """The three children of a CPU or GPU benchmark Workspace named :data:`TEMPLATE`, as
    the operator's reconcile builds them (JSON text; the owner uid left as ``UID``)."""
    ws = Workspace.from_manifest(workspace(TEMPLATE, gpu))
    settings = OperatorSettings()
    preset = plan.preset_of(ws)
    sku = find_sku(ws.resource.instance_type) if ws.resource.instance_type else None
    target = plan.node_count(ws, preset, sku=sku, config_text=None)
    image = image_for("inference", registry=settings.image_registry, tag=settings.image_tag)
    inference = plan.inference_plan(
        ws, preset, image=image, target=target, sku=sku, config_text=None
    )
    children = [
        service_builders.headless_service(ws, ray=False),
        service_builders.service(ws, leader_only=False, load_balancer=False),
        inference_builders.inference_statefulset(ws, inference, server=server),
    ]
    return json.dumps(children)


class Floor:
    """Watches Workspaces and makes their children with four requests each."""

    def __init__(self, client: httpx.AsyncClient, server: KubeVersion) -> None:
        self.client = client
        self.templates = {gpu: children_template(gpu, server) for gpu in (False, True)}
        self.done: set[str] = set()

    async def handle(self, obj: dict[str, Any]) -> None:
        """Apply the children of a new Workspace, then write its status."""
        meta = obj["metadata"]
        name = meta["name"]
        if name in self.done:
            return
        self.done.add(name)
        gpu = bool((obj.get("resource") or {}).get("instanceType"))
        text = self.templates[gpu].replace(TEMPLATE, name)
        children = json.loads(text)
        for child in children:
            for ref in child["metadata"].get("ownerReferences", []):
                ref["uid"] = meta["uid"]
        await asyncio.gather(*(self.apply(child) for child in children))
        status = {
            "conditions": [
                {
                    "type": "ResourceReady",
                    "status": "True",
                    "reason": "Floor",
                    "message": "children applied",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        }
        response = await self.client.patch(
            f"{WORKSPACES}/{name}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": MERGE},
        )
        response.raise_for_status()

    async def apply(self, child: dict[str, Any]) -> None:
        """Server-side apply one child (field manager ``floor``, forced)."""
        path = f"{PATHS[child['kind']]}/{child['metadata']['name']}"
        response = await self.client.patch(
            path,
            params={"fieldManager": "floor", "force": "true"},
            content=json.dumps(child),
            headers={"Content-Type": APPLY},
        )
        response.raise_for_status()

    async def run(self) -> None:
        """List, then watch; every Workspace event without a status starts a handler."""
        tasks: set[asyncio.Task[None]] = set()

        def start(obj: dict[str, Any]) -> None:
            if not obj.get("status"):
                task = asyncio.create_task(self.handle(obj))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        listed = (await self.client.get(WORKSPACES)).json()
        for obj in listed["items"]:
            start(obj)
        version = listed["metadata"]["resourceVersion"]
        while True:
            params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "300"}
            async with self.client.stream("GET", WORKSPACES, params=params, timeout=None) as answer:
                async for line in answer.aiter_lines():
                    if line:
                        event = json.loads(line)
                        start(event["object"])
                        version = event["object"]["metadata"]["resourceVersion"]


async def health(port: int) -> asyncio.Server:
    """``/healthz`` (any request) answered 200 on ``port``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


async def main_async(config: dict[str, Any], health_port: int) -> None:
    """Connect as the kubeconfig's user and run the floor controller."""
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    with tempfile.NamedTemporaryFile(suffix=".crt") as ca:
        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        ca.flush()
        context = ssl.create_default_context(cafile=ca.name)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(
        base_url=cluster["server"],
        verify=context,
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=60,
    ) as client:
        info = (await client.get("/version")).json()
        floor = Floor(client, KubeVersion.from_version_info(info))
        server = await health(health_port)
        async with server:
            await floor.run()


def main() -> None:
    """Parse the arguments and run until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main_async(yaml.safe_load(args.kubeconfig.read_text()), args.health_port))


if __name__ == "__main__":
    main()
