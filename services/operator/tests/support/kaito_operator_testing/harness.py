"""Run the real operator (kopf in a thread) against the API emulator, for tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import kmock

from kaito_operator.settings import OperatorSettings
from kaito_operator.supervisor import Backoff, run_operator
from kaito_operator_testing.emulator import KubernetesEmulator

__all__ = ["OperatorHarness", "RunningOperator", "inference_workspace"]


def inference_workspace(
    name: str,
    inference: dict[str, Any],
    *,
    annotations: dict[str, str] | None = None,
    **resource: Any,
) -> dict[str, Any]:
    """An inference Workspace manifest in ``default`` selecting nodes labelled ``apps=<name>``."""
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": {"labelSelector": {"matchLabels": {"apps": name}}, **resource},
        "inference": inference,
    }


class RunningOperator:
    """One operator (kopf, supervised as the process runs it) in its own thread and event loop."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="kaito-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(
                run_operator(
                    self.settings,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                    backoff=Backoff(first=0.1, limit=0.5),
                )
            )
        except BaseException as exc:  # reported to the test through .error
            self.error = exc

    async def start(self, within: float = 20.0) -> None:
        """Start the thread and wait until kopf reports ready."""
        self.thread.start()
        deadline = time.monotonic() + within
        while not self.ready_flag.is_set():
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start: {self.error!r}")
            await asyncio.sleep(0.02)

    async def stop(self, within: float = 20.0) -> None:
        """Ask kopf to stop and wait for the thread to end."""
        self.stop_flag.set()
        deadline = time.monotonic() + within
        while self.thread.is_alive():
            if time.monotonic() > deadline:
                raise RuntimeError("the operator did not stop")
            await asyncio.sleep(0.02)


class OperatorHarness:
    """The emulator (serving the SDK's CRDs and Karpenter's kinds) plus the operator."""

    def __init__(self, crd_files: list[Path], **settings: Any) -> None:
        self.crd_files = crd_files
        self.settings_overrides = settings
        self.emulator = KubernetesEmulator()
        self.server = kmock.Server(self.emulator)
        self.operator: RunningOperator | None = None

    async def __aenter__(self) -> Self:
        await self.emulator.__aenter__()
        await self.server.__aenter__()
        for path in self.crd_files:
            self.emulator.register_crd_file(path)
        self.emulator.register_resource(
            "karpenter.sh/v1", "nodepools", "NodePool", namespaced=False
        )
        self.emulator.register_resource(
            "karpenter.sh/v1", "nodeclaims", "NodeClaim", namespaced=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.operator is not None:
            await self.operator.stop()
        await self.server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        """The emulator's base URL."""
        return str(self.server.url).rstrip("/")

    def operator_settings(self) -> OperatorSettings:
        """Settings pointing the operator at this emulator."""
        values: dict[str, Any] = {
            "api_server": self.url,
            "post_events": False,
            "resync_seconds": 0.5,
            "metrics_port": None,
            **self.settings_overrides,
        }
        return OperatorSettings(**values)

    async def start_operator(self) -> RunningOperator:
        """Start a (new) operator against the emulator."""
        self.operator = RunningOperator(self.operator_settings())
        await self.operator.start()
        return self.operator

    async def stop_operator(self) -> None:
        """Stop the running operator."""
        if self.operator is not None:
            await self.operator.stop()
            self.operator = None

    def status(
        self, name: str, *, plural: str = "workspaces", namespace: str = "default"
    ) -> dict[str, Any]:
        """The ``status`` of a Workspace (or, with ``plural``, a RAGEngine); {} if none."""
        obj = self.emulator.read_object("kaito.sh/v1beta1", plural, namespace, name) or {}
        return dict(obj.get("status") or {})

    def condition(self, name: str, type_: str, *, plural: str = "workspaces") -> dict[str, Any]:
        """One condition of a Workspace or RAGEngine; {} if it has none of that type."""
        for cond in self.status(name, plural=plural).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def has_condition(
        self,
        name: str,
        type_: str,
        status: str,
        reason: str | None = None,
        *,
        plural: str = "workspaces",
    ) -> Callable[[], dict[str, Any] | None]:
        """A ``wait_for`` predicate: the condition has ``status`` (and ``reason``)."""

        def check() -> dict[str, Any] | None:
            cond = self.condition(name, type_, plural=plural)
            ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
            return cond if ok else None

        return check

    def object_with_condition(
        self, kind: tuple[str, str], name: str, type_: str, status: str
    ) -> Callable[[], dict[str, Any] | None]:
        """A ``wait_for`` predicate: the object ``(apiVersion, plural)`` once the condition
        ``type_`` has ``status`` (the whole object, not just the condition)."""

        def check() -> dict[str, Any] | None:
            obj = self.emulator.read_object(kind[0], kind[1], "default", name)
            for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
                if cond["type"] == type_ and cond["status"] == status:
                    return dict(obj or {})
            return None

        return check

    async def wait_for(
        self, predicate: Callable[[], Any], *, within: float = 15.0, message: str = "condition"
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy; fail after ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            result = predicate()
            if result:
                return result
            if self.operator is not None and self.operator.error is not None:
                raise RuntimeError(f"the operator crashed: {self.operator.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {message}")
            await asyncio.sleep(0.05)
