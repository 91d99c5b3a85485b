"""One pod's stand-in model server: its gRPC and REST listeners and its core.

``PodServer`` can run without Kubernetes: build a ``PodServingSpec`` from a pod
dict (``serving_spec_from_pod``) with any ``ClusterLookup``, and optionally
override the host and ports (tests bind 127.0.0.1 with ephemeral ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from .config import (
    LOAD_DELAY_ANNOTATION,
    LoadDelays,
    ServerFlags,
    find_server_container,
    parse_load_delays,
    parse_server_args,
    server_argv,
)
from .faults import FAULT_ANNOTATION, NO_FAULT, FaultInterceptor, parse_fault
from .grpc_service import add_services
from .models import ModelCache
from .paths import ClusterLookup, PathResolver
from .rest import RestApi
from .versions import VersionManager

log = logging.getLogger(__name__)


class BadPod(Exception):
    """A pod the stand-in cannot serve; the message says why."""


class BindError(Exception):
    """A listener could not bind its address (e.g. still held by a previous pod)."""


@dataclass
class Runtime:
    """What every pod server of the process shares: loaded models and threads."""

    cache: ModelCache
    infer_executor: Executor

    @classmethod
    def create(cls, load_threads: int = 2, infer_threads: int = 4) -> Runtime:
        """Thread pools sized for a small machine, and an empty model cache."""
        load = ThreadPoolExecutor(load_threads, thread_name_prefix="standin-load")
        infer = ThreadPoolExecutor(infer_threads, thread_name_prefix="standin-infer")
        return cls(ModelCache(load), infer)

    def shutdown(self) -> None:
        """Stop the thread pools without waiting for running TensorFlow calls."""
        self.infer_executor.shutdown(wait=False, cancel_futures=True)
        self.cache.shutdown()


@dataclass
class PodServingSpec:
    """What serving one pod needs: where to listen and what the server was told."""

    namespace: str
    name: str
    uid: str
    ip: str
    flags: ServerFlags
    resolver: PathResolver
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``namespace/name`` for logs."""
        return f"{self.namespace}/{self.name}"


def serving_spec_from_pod(pod: Mapping[str, Any], lookup: ClusterLookup) -> PodServingSpec:
    """Read a pod dict (as the API returns it); raises ``BadPod``."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    container = find_server_container(pod)
    if container is None:
        raise BadPod("no container named tensorflow-serving or running tensorflow_model_server")
    try:
        flags = parse_server_args(server_argv(container))
    except ValueError as e:
        raise BadPod(f"bad model server flags (the real server would exit): {e}") from None
    return PodServingSpec(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "?",
        uid=meta.get("uid") or "",
        ip=status.get("podIP") or "",
        flags=flags,
        resolver=PathResolver(pod, container, lookup),
        annotations=dict(meta.get("annotations") or {}),
    )


class PodServer:
    """tensorflow_model_server as one pod would run it."""

    def __init__(
        self,
        spec: PodServingSpec,
        runtime: Runtime,
        *,
        host: str | None = None,
        grpc_port: int | None = None,
        rest_port: int | None = None,
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.host = host or spec.ip
        self._grpc_port_wanted = spec.flags.port if grpc_port is None else grpc_port
        self._rest_port_wanted = spec.flags.rest_api_port if rest_port is None else rest_port
        self._rest_enabled = spec.flags.rest_api_port != 0
        self.grpc_port = 0
        self.rest_port = 0
        self._load_delays = LoadDelays()
        self._delay_text: str | None = None
        self.fault = NO_FAULT
        self._fault_text: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners_lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.update_annotations(spec.annotations)
        self.manager = VersionManager(
            name=spec.key,
            flags=spec.flags,
            resolver=spec.resolver,
            cache=runtime.cache,
            load_delays=lambda: self._load_delays,
        )
        self._grpc: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    @property
    def listening(self) -> bool:
        """The gRPC listener is open (False while a ``vanish`` fault holds)."""
        return self._grpc is not None

    def update_annotations(self, annotations: Mapping[str, str]) -> None:
        """Take the pod's current annotations (the load delay and the fault may change)."""
        self.spec.annotations = dict(annotations)
        self._update_fault(annotations.get(FAULT_ANNOTATION))
        text = annotations.get(LOAD_DELAY_ANNOTATION)
        if text == self._delay_text:
            return
        self._delay_text = text
        try:
            self._load_delays = parse_load_delays(text)
        except ValueError as e:
            log.error("%s: ignoring annotation %s: %s", self.spec.key, LOAD_DELAY_ANNOTATION, e)
            self._load_delays = LoadDelays()

    def _update_fault(self, text: str | None) -> None:
        if text == self._fault_text:
            return
        self._fault_text = text
        try:
            fault = parse_fault(text)
        except ValueError as e:
            log.error("%s: ignoring annotation %s: %s", self.spec.key, FAULT_ANNOTATION, e)
            fault = NO_FAULT
        if fault == self.fault:
            return
        log.info("%s: fault %s -> %s", self.spec.key, self.fault.describe(), fault.describe())
        self.fault = fault
        if self._loop is not None:
            # Listeners open and close in the event loop, whichever thread saw the pod.
            self._loop.call_soon_threadsafe(self._schedule_listener_sync)

    def _schedule_listener_sync(self) -> None:
        if self._stopping:
            return
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(
                self._sync_listeners(), name=f"{self.spec.key} listeners"
            )

    async def _sync_listeners(self) -> None:
        """Close the listeners under a ``vanish`` fault, reopen them once it clears."""
        while not self._stopping:
            async with self._listeners_lock:
                if self.fault.vanish and self.listening:
                    await self._close_listeners()
                    log.info("%s: listeners closed (fault vanish)", self.spec.key)
                elif not self.fault.vanish and not self.listening:
                    try:
                        await self._open_listeners()
                        log.info("%s: listeners open again", self.spec.key)
                    except BindError as e:
                        log.warning("%s: reopening listeners: %s; retrying", self.spec.key, e)
                        await asyncio.sleep(0.5)
                        continue
            if self.fault.vanish != self.listening:
                return

    async def start(self) -> None:
        """Bind the listeners and start the core; raises ``BindError``."""
        self._loop = asyncio.get_running_loop()
        flags = self.spec.flags
        for name in flags.unknown_flags:
            log.warning(
                "%s: flag --%s is unknown to the stand-in; the real server refuses flags it "
                "does not know",
                self.spec.key,
                name,
            )
        if not self.fault.vanish:
            async with self._listeners_lock:
                await self._open_listeners()
        try:
            await self.manager.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "serving pod %s on %s: gRPC %d, REST %s%s",
            self.spec.key,
            self.host,
            self.grpc_port,
            self.rest_port or "off",
            f" (fault: {self.fault.describe()})" if self.fault.kind else "",
        )

    async def _open_listeners(self) -> None:
        flags = self.spec.flags
        server = grpc.aio.server(
            options=[
                # Without this, two servers could silently share an address.
                ("grpc.so_reuseport", 0),
                # The real server lifts gRPC's message size limits.
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
            interceptors=[FaultInterceptor(lambda: self.fault, self.spec.key)],
        )
        add_services(server, self.manager, self.runtime.infer_executor)
        # Reopened after a vanish fault: the same port as before, not a new ephemeral one.
        address = f"{self.host}:{self.grpc_port or self._grpc_port_wanted}"
        try:
            self.grpc_port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise BindError(f"gRPC {address}: {e}") from None
        if not self.grpc_port:
            raise BindError(f"gRPC {address}: cannot bind")
        await server.start()
        self._grpc = server
        if self._rest_enabled and flags.rest_api_port == flags.port:
            log.error(
                "%s: --rest_api_port cannot be same as --port; REST API not exported",
                self.spec.key,
            )
        elif self._rest_enabled:
            runner = web.AppRunner(
                RestApi(self.manager, self.runtime.infer_executor).app(),
                access_log=None,
                shutdown_timeout=0.5,
            )
            await runner.setup()
            rest_port = self.rest_port or self._rest_port_wanted
            try:
                await web.TCPSite(runner, self.host, rest_port).start()
            except OSError as e:
                await runner.cleanup()
                await server.stop(None)
                self._grpc = None
                raise BindError(f"REST {self.host}:{rest_port}: {e}") from None
            self._runner = runner
            self.rest_port = int(runner.addresses[0][1])

    async def _close_listeners(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0.2)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def stop(self) -> None:
        """Close the listeners and let go of the loaded models."""
        self._stopping = True
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.manager.stop()
        await self._close_listeners()
        log.info("stopped serving pod %s (%s)", self.spec.key, self.host)
