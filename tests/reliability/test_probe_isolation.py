"""Probe isolation: 50 hung model servers delay only their own ServedModels.

Real gRPC servers in this process (50 that never answer GetModelStatus, one
that answers AVAILABLE), the operator's real `Prober`, `ProbeSchedule` and
`Worker` passes; only the API writes are recorded instead of sent (the
FakeApplier of the unit tests), since what is measured is the probe path.
Each hung ServedModel's pass is in the middle of its probe (held for the
whole probe timeout) when the healthy ServedModel appears; its gate must
open while every hung probe is still in flight. The delay from its wake-up
to its gate write is the figure for docs/reliability.md, not an assertion.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from tests.reliability import results
from tests.unit import builders
from tests.unit.test_reconcile import FakeApplier
from tests.unit.test_wire_client import SERVICE, serve
from tfserving_operator import api, render, spec
from tfserving_operator.observe import Cache, Prober
from tfserving_operator.reconcile import Context
from tfserving_operator.settings import Settings
from tfserving_operator.spec import VersionSet
from tfserving_operator.wire import tfserving_wire_pb2 as pb

HUNG = 50
NAMESPACE = "isolation"
# Longer than the test: a hung probe stays in flight throughout.
PROBE_TIMEOUT = 60.0


def servedmodel(name: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1},
        "spec": {"storage": {"hostPath": {"path": "/srv/m"}}, "modelName": "m", "version": 1},
    }


def model_pod(name: str, target: str) -> Any:
    sm = spec.parse(servedmodel(name), "img", "img-gpu")
    host, port = target.rsplit(":", 1)
    return builders.pod(
        f"{name}-pod",
        versions="1",
        config_hash=render.render(sm, VersionSet.specific([1])).config_hash,
        model_name="m",
        ip=host,
        grpc_port=int(port),
    )


class GateRecorder(FakeApplier):
    """Records writes (FakeApplier) and signals each gate write."""

    def __init__(self, written: asyncio.Event) -> None:
        super().__init__()
        self.written = written

    async def set_gate(
        self, namespace: str, pod: str, is_open: bool, reason: str, message: str
    ) -> bool:
        done = await super().set_gate(namespace, pod, is_open, reason, message)
        self.written.set()
        return done


class Servers:
    """Counts the GetModelStatus calls that entered and left the hung servers."""

    def __init__(self) -> None:
        self.entered = 0
        self.left = 0
        self.changed = asyncio.Event()

    async def hang(self, request: bytes, context: Any) -> bytes:
        self.entered += 1
        self.changed.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.left += 1
        return b""

    @staticmethod
    async def available(request: bytes, context: Any) -> bytes:
        answer = pb.GetModelStatusResponse()
        answer.model_version_status.add(version=1, state=pb.ModelVersionStatus.AVAILABLE)
        return answer.SerializeToString()

    @staticmethod
    def register(handler: Any) -> Any:
        def add(server: grpc.aio.Server) -> None:
            method = grpc.unary_unary_rpc_method_handler(handler)
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(SERVICE, {"GetModelStatus": method}),)
            )

        return add


async def _wait(what: str, condition: Any, event: asyncio.Event, timeout: float = 60) -> None:
    async def until() -> None:
        while not condition():
            event.clear()
            await event.wait()

    try:
        await asyncio.wait_for(until(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def _measure() -> dict[str, Any]:
    servers = Servers()
    gate_written = asyncio.Event()
    applier = GateRecorder(gate_written)
    prober = Prober(PROBE_TIMEOUT)
    ctx = Context(
        settings=Settings(probe_timeout_seconds=PROBE_TIMEOUT),
        applier=applier,
        cache=Cache(),
        prober=prober,
    )
    async with serve(Servers.register(Servers.available)) as healthy_target:
        hung_targets = []
        stack = []
        for _ in range(HUNG):
            cm = serve(Servers.register(servers.hang))
            hung_targets.append(await cm.__aenter__())
            stack.append(cm)
        try:
            for i, target in enumerate(hung_targets):
                name = f"hung-{i}"
                ctx.cache.pods[(NAMESPACE, name)] = {f"{name}-pod": model_pod(name, target)}
                ctx.poke((NAMESPACE, name), servedmodel(name))
            await _wait(
                f"{HUNG} hung GetModelStatus calls",
                lambda: servers.entered >= HUNG,
                servers.changed,
            )
            key = (NAMESPACE, "healthy")
            ctx.cache.pods[key] = {"healthy-pod": model_pod("healthy", healthy_target)}
            woken = time.monotonic()
            ctx.poke(key, servedmodel("healthy"))

            def opened() -> bool:
                return ("healthy-pod", True, api.GateReason.AVAILABLE) in applier.gates

            await _wait("the healthy pod's gate to open", opened, gate_written)
            delay = time.monotonic() - woken
            in_flight = servers.entered - servers.left
        finally:
            await ctx.stop()
            await prober.close()
            for cm in stack:
                await cm.__aexit__(None, None, None)
    return {"delay_ms": round(delay * 1000, 1), "in_flight": in_flight}


def test_fifty_hung_servers_do_not_delay_a_healthy_servedmodels_probe() -> None:
    measured = asyncio.run(_measure())
    held = measured["in_flight"] == HUNG
    results.record(
        "probe-isolation-50-hung",
        "Faults",
        f"{HUNG} hung model servers (each its own ServedModel, probe in flight for the whole "
        "timeout), then a healthy ServedModel: its gate opens while every hung probe still waits",
        1,
        int(held),
        "healthy gate opened with all hung probes in flight",
        suite="make test",
        figures={"healthy probe to gate ms": measured["delay_ms"]},
    )
    assert held, f"the healthy gate waited for hung probes: {measured}"
