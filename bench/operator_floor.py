"""The floor under ``operator_scale.py``: the same children made by a minimal controller.

Run by ``operator_scale.py --floor`` in place of the operator (same ServiceAccount, same
control plane, same Workspaces): one process that watches the benchmark's Workspaces and,
for each new one, server-side-applies the same three children the operator would (both
Services and the StatefulSet, built once per kind by the operator's own builders and
copied per Workspace) at once, then writes one status with merge patch. Four requests
per Workspace, no framework, no finalizer, no reads, aiohttp (kopf's HTTP client, the
cheapest per request here; httpx's pool cost this process more CPU per Workspace than
the whole operator): what the control plane itself takes to create them on this
machine, so the operator's numbers can be read against it.

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

import aiohttp
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

    def __init__(self, client: Client, server: KubeVersion) -> None:
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
        await self.client.send("PATCH", f"{WORKSPACES}/{name}/status", {"status": status}, MERGE)

    async def apply(self, child: dict[str, Any]) -> None:
        """Server-side apply one child (field manager ``floor``, forced)."""
        path = f"{PATHS[child['kind']]}/{child['metadata']['name']}"
        await self.client.send("PATCH", f"{path}?fieldManager=floor&force=true", child, APPLY)

    async def run(self) -> None:
        """List, then watch; every Workspace event without a status starts a handler."""
        tasks: set[asyncio.Task[None]] = set()

        def start(obj: dict[str, Any]) -> None:
            if not obj.get("status"):
                task = asyncio.create_task(self.handle(obj))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        listed = await self.client.send("GET", WORKSPACES)
        for obj in listed["items"]:
            start(obj)
        version = listed["metadata"]["resourceVersion"]
        while True:
            query = f"?watch=true&resourceVersion={version}&timeoutSeconds=300"
            async with self.client.session.get(self.client.server + WORKSPACES + query) as answer:
                async for line in answer.content:
                    if line.strip():
                        event = json.loads(line)
                        start(event["object"])
                        version = event["object"]["metadata"]["resourceVersion"]


class Client:
    """JSON requests to the apiserver over one aiohttp session (100 connections)."""

    def __init__(self, session: aiohttp.ClientSession, server: str) -> None:
        self.session = session
        self.server = server

    async def send(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        """One request; its JSON answer (an error status raises)."""
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type}
        async with self.session.request(
            method, self.server + path, data=data, headers=headers
        ) as response:
            response.raise_for_status()
            answer: dict[str, Any] = await response.json()
            return answer


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
    connector = aiohttp.TCPConnector(limit=100, ssl=context)
    async with aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    ) as session:
        client = Client(session, cluster["server"])
        info = await client.send("GET", "/version")
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
