"""One run of tensorflow_model_server for one pod: start-up, listeners, exit.

``PodServer`` is one *process run*: ``await server.run()`` goes through what
main.cc and ``Server::BuildAndStart`` (model_servers/server.cc at 2.20.0) do,
and returns an ``ExitStatus`` when the run ends by itself (a bad flag value,
an unreadable config, a failed initial load: code 255, i.e. ``return -1``)
or when ``await server.kill()`` stops it (SIGKILL: 137). The ports open only
after the initial load. What the run printed is in ``server.log_lines``, and
the kubelet's termination-message tail of it in ``ExitStatus.log_tail``.

It runs without Kubernetes: build a ``PodServingSpec`` from a pod dict
(``serving_spec_from_pod``) with any ``ClusterLookup``, and optionally
override the host and ports (tests bind 127.0.0.1 with ephemeral ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import text_format
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from tfserving_operator.aio import wait_event

from .config import (
    LOAD_DELAY_ANNOTATION,
    LoadDelays,
    ServerFlags,
    describe_error,
    find_server_container,
    parse_load_delays,
    parse_server_args,
    server_argv,
    single_model_config,
)
from .errors import ServingError
from .faults import FAULT_ANNOTATION, NO_FAULT, FaultInterceptor, parse_fault
from .flags import PROGRAM, usage_lines
from .grpc_service import RpcPool, add_services
from .models import LoadedModel, ModelCache
from .monitoring import ServingMetrics, prometheus_path
from .output import ProcessOutput, kubelet_tail
from .paths import ClusterLookup, PathError, PathResolver
from .rest import RestApi
from .versions import VersionManager
from .warmup import run_warmup

log = logging.getLogger(__name__)


class BadPod(Exception):
    """A pod the stand-in cannot serve; the message says why."""


class BindError(Exception):
    """A listener could not bind its address (e.g. still held by a previous pod)."""


EXIT_FAILURE = 255  # main.cc's ``return -1``, as the kernel reports it
EXIT_KILLED = 137  # 128 + SIGKILL


@dataclass(frozen=True)
class ExitStatus:
    """How one run of the server ended, as a kubelet would record it."""

    code: int
    reason: str
    log_tail: tuple[str, ...] = ()

    @classmethod
    def of(cls, code: int, lines: list[str]) -> ExitStatus:
        """The status of exit code ``code`` (0..255) after printing ``lines``."""
        return cls(code, "Completed" if code == 0 else "Error", kubelet_tail(lines))

    @property
    def message(self) -> str:
        """The termination message ``FallbackToLogsOnError`` makes of the tail."""
        return "\n".join(self.log_tail)


class ServerExited(Exception):
    """``start()`` saw the run end before it served; ``status`` says how."""

    def __init__(self, status: ExitStatus) -> None:
        super().__init__(f"exit code {status.code}: {status.message[-300:]}")
        self.status = status


def schedulable_cpus() -> int:
    """``port::NumSchedulableCPUs()``: the CPUs the process may run on (a pod's
    CPU limit does not change it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass
class Runtime:
    """What every pod server of the process shares: loaded models and threads.

    ``cpus`` plays ``NumSchedulableCPUs()`` of every pod: the real defaults of
    ``--grpc_max_threads``, ``--rest_api_num_threads`` and
    ``num_initial_load_threads`` are 4 x that.
    """

    cache: ModelCache
    infer_executor: Executor
    cpus: int = field(default_factory=schedulable_cpus)

    @classmethod
    def create(
        cls, load_threads: int = 2, infer_threads: int = 4, cpus: int | None = None
    ) -> Runtime:
        """Thread pools sized for a small machine, and an empty model cache."""
        load = ThreadPoolExecutor(load_threads, thread_name_prefix="standin-load")
        infer = ThreadPoolExecutor(infer_threads, thread_name_prefix="standin-infer")
        return cls(ModelCache(load), infer, cpus or schedulable_cpus())

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


def serving_spec_from_pod(
    pod: Mapping[str, Any], lookup: ClusterLookup, empty_dir_root: str = ""
) -> PodServingSpec:
    """Read a pod dict (as the API returns it); raises ``BadPod``."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    container = find_server_container(pod)
    if container is None:
        raise BadPod("no container named tensorflow-serving or running tensorflow_model_server")
    # Flag problems are the process's to report (PodServer.run), not a bad pod.
    flags = parse_server_args(server_argv(container))
    return PodServingSpec(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "?",
        uid=meta.get("uid") or "",
        ip=status.get("podIP") or "",
        flags=flags,
        resolver=PathResolver(pod, container, lookup, empty_dir_root),
        annotations=dict(meta.get("annotations") or {}),
    )


class PodServer:
    """One run of tensorflow_model_server as one pod would run it."""

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
        flags = spec.flags
        self._grpc_port_wanted = flags.port if grpc_port is None else grpc_port
        self._rest_port_wanted = flags.rest_api_port if rest_port is None else rest_port
        self._rest_enabled = flags.rest_api_port != 0
        self.grpc_threads = flags.grpc_max_threads or 4 * runtime.cpus
        self.rest_threads = flags.rest_api_num_threads or 4 * runtime.cpus
        self.grpc_port = 0
        self.rest_port = 0
        self.output = ProcessOutput(spec.key)
        self._load_delays = LoadDelays()
        self._delay_text: str | None = None
        self.fault = NO_FAULT
        self._fault_text: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners_lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._serving = False  # the initial load is done: listeners may be open
        self._started = asyncio.Event()  # serving, or the run has ended
        self._killed = asyncio.Event()
        self._finished = asyncio.Event()
        self._run_task: asyncio.Task[ExitStatus] | None = None
        self.exit_status: ExitStatus | None = None
        self.update_annotations(spec.annotations)
        self.manager = VersionManager(
            name=spec.key,
            flags=flags,
            resolver=spec.resolver,
            cache=runtime.cache,
            load_delays=lambda: self._load_delays,
            output=self.output,
            warm_up=self._warm_up if flags.enable_model_warmup else None,
            initial_load_threads=4 * runtime.cpus,
        )
        self.rpc_pool: RpcPool | None = None
        self.rest_api: RestApi | None = None
        # This run's serving metrics: a restarted server starts from zero.
        self.metrics = ServingMetrics()
        self._grpc: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    @property
    def listening(self) -> bool:
        """The gRPC listener is open (False before the initial load is done,
        after the run ended, and while a ``vanish`` fault holds)."""
        return self._grpc is not None

    @property
    def serving(self) -> bool:
        """The initial load is done and the run goes on (ports open unless a fault)."""
        return self._serving and not self._finished.is_set()

    @property
    def log_lines(self) -> list[str]:
        """What this run printed so far, oldest first."""
        return self.output.lines

    def _warm_up(self, model: LoadedModel, version_dir: str) -> None:
        iterations = self.spec.flags.num_request_iterations_for_warmup
        say = lambda line: self.output.info("saved_model_warmup_util.cc", line)  # noqa: E731
        run_warmup(model, version_dir, iterations, say)

    # ----------------------------------------------------------- annotations

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
        if self._stopping or not self._serving:
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

    # ------------------------------------------------------------ the process

    async def run(self) -> ExitStatus:
        """Run the server until it exits by itself or ``kill()``; returns how it ended."""
        if self._finished.is_set() or self._loop is not None:
            raise RuntimeError(f"{self.spec.key}: a PodServer runs once; make a new one")
        self._loop = asyncio.get_running_loop()
        main = asyncio.create_task(self._main(), name=f"{self.spec.key} main")
        killed = asyncio.create_task(self._killed.wait(), name=f"{self.spec.key} kill")
        try:
            await asyncio.wait({main, killed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
            if not main.done():
                main.cancel()
            code = EXIT_KILLED
            try:
                code = await main
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("%s: the stand-in failed; reporting a crash", self.spec.key)
                code = EXIT_FAILURE
            if self._killed.is_set():
                code = EXIT_KILLED
            await self._teardown()
            self.exit_status = ExitStatus.of(code, self.output.lines)
            self._started.set()
            self._finished.set()
        log.info("%s: model server exited with code %d", self.spec.key, code)
        return self.exit_status

    async def kill(self) -> None:
        """SIGKILL: stop at once (exit code 137); returns when the run has ended."""
        self._killed.set()
        if self._loop is not None:
            await self._finished.wait()

    async def _main(self) -> int:
        """main.cc, then ``Server::BuildAndStart``: the exit code if it returns."""
        flags = self.spec.flags
        out = self.output
        for error in flags.flag_errors:
            out.error("command_line_flags.cc", error)
        if not (flags.flag_errors or flags.help_requested) and flags.version:
            out.raw(f"TensorFlow ModelServer: {_release()}\nTensorFlow Library: {_tf_version()}")
            return 0
        usage = usage_lines(flags.defaults_for_usage(self.runtime.cpus), PROGRAM)
        if flags.flag_errors or flags.help_requested:
            out.raw("\n".join(usage))
            return EXIT_FAILURE
        if flags.unknown_args:
            out.raw("\n".join([f"unknown argument: {flags.unknown_args[0]}", *usage]))
        try:
            config, text = await self._initial_config()
            await self.manager.start(config, text)
        except ServingError as e:
            out.raw(f"Failed to start server. Error: {describe_error(e)}")
            return EXIT_FAILURE
        await self._open_at_start()
        self._started.set()
        await asyncio.Event().wait()  # WaitForTermination: only a signal ends it
        return 0

    async def _initial_config(self) -> tuple[ModelServerConfig, str | None]:
        """The checks of ``BuildAndStart`` before ``ServerCore::Create``, and the config."""
        flags = self.spec.flags
        if flags.port == 0 and not flags.grpc_socket_path:
            raise _invalid(
                "At least one of server_options.grpc_port or "
                "server_options.grpc_socket_path must be set."
            )
        if flags.use_alts_credentials and flags.ssl_config_file:
            raise _invalid(
                "Either use_alts_credentials must be false or ssl_config_file must be empty."
            )
        if not flags.model_base_path and not flags.model_config_file:
            raise _invalid(
                "Both server_options.model_base_path and "
                "server_options.model_config_file are empty!"
            )
        if not flags.model_config_file:
            self.output.info(
                "server.cc:80",
                f"Building single TensorFlow model file config:  model_name: {flags.model_name} "
                f"model_base_path: {flags.model_base_path}",
            )
            return single_model_config(flags.model_name, flags.model_base_path), None
        path = flags.model_config_file
        try:
            text = await asyncio.to_thread(self.spec.resolver.read_text, path)
        except PathError as e:
            log.info("%s: initial config %s unreadable: %s", self.spec.key, path, e)
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"{path}; No such file or directory"
            ) from None
        config = ModelServerConfig()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as e:
            self.output.error(
                "text_format.cc",
                f"Error parsing text-format tensorflow.serving.ModelServerConfig: {e}",
            )
            raise _invalid(f"Invalid protobuf file: '{path}'") from None
        return config, text

    async def _open_at_start(self) -> None:
        """Open the listeners once the initial load is done.

        An address still held by a pod the stand-in has not stopped yet is an
        artefact of serving every pod from one process (a real pod has its own
        network namespace): retried until it is free or the run is killed.
        """
        logged = ""
        while not self.fault.vanish:
            try:
                async with self._listeners_lock:
                    await self._open_listeners()
                break
            except BindError as e:
                if str(e) != logged:
                    log.warning("%s: %s; retrying", self.spec.key, e)
                    logged = str(e)
                await wait_event(self._killed, 0.5)
        self._serving = True
        self._schedule_listener_sync()  # a fault may have changed meanwhile

    async def _open_listeners(self) -> None:
        flags = self.spec.flags
        self.rpc_pool = RpcPool(self.grpc_threads)
        server = grpc.aio.server(
            options=[
                # Without this, two servers could silently share an address.
                ("grpc.so_reuseport", 0),
                # The real server lifts gRPC's message size limits.
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
            interceptors=[
                self.rpc_pool,
                FaultInterceptor(lambda: self.fault, self.spec.key),
            ],
        )
        add_services(
            server, self.manager, self.runtime.infer_executor, self.metrics, lambda: self.fault
        )
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
        self.output.info("server.cc:430", f"Running gRPC ModelServer at 0.0.0.0:{flags.port} ...")
        if self._rest_enabled and flags.rest_api_port == flags.port:
            self.output.error(
                "server.cc:456",
                "server_options.http_port cannot be same as grpc_port. Please use a different "
                "port for HTTP/REST API. Skipped exporting HTTP/REST API.",
            )
        elif self._rest_enabled:
            await self._open_rest()

    async def _open_rest(self) -> None:
        """The REST listener; like the real server, failing to open it is logged, not fatal."""
        self.rest_api = RestApi(
            self.manager,
            self.runtime.infer_executor,
            self.rest_threads,
            self.metrics,
            await self._metrics_path(),
            lambda: self.fault,
        )
        runner = web.AppRunner(
            self.rest_api.app(),
            access_log=None,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        rest_port = self.rest_port or self._rest_port_wanted
        shown = f"localhost:{self.spec.flags.rest_api_port}"
        try:
            await web.TCPSite(runner, self.host, rest_port).start()
        except OSError as e:
            await runner.cleanup()
            log.warning("%s: REST %s:%s: %s", self.spec.key, self.host, rest_port, e)
            self.output.error("server.cc:453", f"Failed to start HTTP Server at {shown}")
            return
        self._runner = runner
        self.rest_port = int(runner.addresses[0][1])
        self.output.info("server.cc:451", f"Exporting HTTP/REST API at:{shown} ...")

    async def _metrics_path(self) -> str | None:
        """The Prometheus page's path from --monitoring_config_file (None: no page).

        The real server parses the file in Server::BuildAndStart and fails to
        start on a bad one; here a bad file only costs the page (logged).
        """
        path = self.spec.flags.monitoring_config_file
        if not path:
            return None
        try:
            text = await asyncio.to_thread(self.spec.resolver.read_text, path)
            return prometheus_path(text)
        except (PathError, text_format.ParseError) as e:
            self.output.error("server.cc", f"{path}: {e}")
            return None

    async def _close_listeners(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _teardown(self) -> None:
        self._stopping = True
        if self._sync_task is not None and not self._sync_task.done():
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.manager.stop()
        async with self._listeners_lock:
            await self._close_listeners()

    # ------------------------------------------------- thin wrappers (supervisor, tests)

    async def start(self) -> None:
        """Run in the background and return once the server serves (ports open).

        Raises ``ServerExited`` if the run ends first. Never returns while the
        initial load waits (a missing base path): use ``run()`` for that.
        """
        self._run_task = asyncio.create_task(self.run(), name=f"{self.spec.key} run")
        await self._started.wait()
        if self._run_task.done():
            raise ServerExited(self._run_task.result())
        log.info(
            "serving pod %s on %s: gRPC %d, REST %s%s",
            self.spec.key,
            self.host,
            self.grpc_port,
            self.rest_port or "off",
            f" (fault: {self.fault.describe()})" if self.fault.kind else "",
        )

    async def stop(self) -> None:
        """Kill the run (if any) and wait for it to end."""
        await self.kill()
        if self._run_task is not None:
            with contextlib.suppress(Exception):
                await self._run_task
        log.info("stopped serving pod %s (%s)", self.spec.key, self.host)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _release() -> str:
    try:
        from tfserving_operator.release import TF_SERVING_VERSION
    except ImportError:
        return "2.20.0"
    return str(TF_SERVING_VERSION)


def _tf_version() -> str:
    try:
        return importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
