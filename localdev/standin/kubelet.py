"""A kubelet for model-server pods of the local cluster, in the stand-in process.

kwok's stages (localdev/sim/kwok-stages.yaml) give a pod its IP; for pods
labelled ``serving.tfoperator.dev/servedmodel`` everything after that is done
here, the way a kubelet does it: start the container (one stand-in server
run), run its tcpSocket startup, readiness and liveness probes, restart it
with the crash-loop back-off when it exits or is killed, and on deletion run
the preStop hook, honour the grace period and delete the pod object.

Layers: the watch (``PodKubelets.event``) observes; ``kubelet_decide`` (pure)
decides what a kubelet would write or do; ``PodApi`` is the only writer.
Each behaviour names the Kubernetes documentation page it follows.

The server process is anything with the ``ServerProcess`` members; a factory
builds one per container start (``kubelet_process.standin_factory``: one
``PodServer`` run, which exits as TF Serving does; tests use fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from tfserving_operator.aio import wait_event

from . import kubelet_decide as decide
from .kubelet_decide import Body, ContainerRecord, ProbeSpec

log = logging.getLogger(__name__)

SERVED_MODEL_LABEL = "serving.tfoperator.dev/servedmodel"
# Pod Lifecycle, "Termination of Pods": the default terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30
# A real kubelet's status manager retries failed status writes; so do we.
WRITE_RETRY_SECONDS = 1.0
# The real server exits -1 on bad flags (main.cc at 2.19.1): 255 as an exit code.
BAD_FLAGS_EXIT_CODE = 255
SIGKILL_EXIT_CODE = 137


# ----- the process interface --------------------------------------------------


class ExitLike(Protocol):
    """How a server run ended (``server.ExitStatus`` once it exists)."""

    @property
    def code(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def log_tail(self) -> tuple[str, ...]: ...


class ServerProcess(Protocol):
    """One run of tensorflow_model_server for one pod."""

    @property
    def listening(self) -> bool: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def log_lines(self) -> Sequence[str]: ...

    def run(self) -> Awaitable[ExitLike]:
        """Serve until the server exits by itself; returns how it ended."""
        ...

    def kill(self) -> Awaitable[None]:
        """Stop at once (SIGKILL: exit 137); ``run()`` then returns."""
        ...


@runtime_checkable
class TakesAnnotations(Protocol):
    """A process that follows the pod's annotations (the stand-in's fault and
    load-delay annotations)."""

    def update_annotations(self, annotations: Mapping[str, str]) -> None: ...


# Builds a fresh process for a pod (as it is now); raising means the
# container cannot start (its message becomes the termination message).
ProcessFactory = Callable[[Mapping[str, Any]], ServerProcess]


class InitProcess(Protocol):
    """One run of an init container's program (kubelet_init.HostInitProcess)."""

    log_lines: list[str]

    def run(self) -> Awaitable[int]:
        """Run to the end; returns the exit code."""
        ...

    def kill(self) -> Awaitable[None]:
        """SIGKILL."""
        ...


class InitRunner(Protocol):
    """Builds the run of one init container (kubelet_init.HostInitRunner);
    raising means the container cannot be created (CreateContainerConfigError)."""

    def prepare(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> InitProcess: ...


@dataclass(frozen=True)
class ExitStatus:
    """How a run ended: what ``ExitLike`` asks for."""

    code: int
    reason: str
    log_tail: tuple[str, ...] = ()


# ----- the one writer ---------------------------------------------------------


class PodApi:
    """Every write the kubelet makes: status patches, Events, the final delete."""

    def __init__(self, core: Any, node_component: str = "kubelet") -> None:
        self._core = core
        self._component = node_component

    async def patch_status(self, pod: Mapping[str, Any], body: Body) -> None:
        """Strategic-merge patch of the status subresource (conditions merge by type)."""
        meta = pod["metadata"]
        await asyncio.to_thread(
            self._core.patch_namespaced_pod_status,
            meta["name"],
            meta["namespace"],
            body,
            _content_type="application/strategic-merge-patch+json",
            _request_timeout=10,
        )

    async def delete_now(self, pod: Mapping[str, Any]) -> None:
        """Delete the pod object with grace 0, as the kubelet does once its
        containers are stopped; only this pod (uid precondition)."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            await asyncio.to_thread(
                self._core.delete_namespaced_pod,
                meta["name"],
                meta["namespace"],
                body=body,
                _request_timeout=10,
            )
        except Exception as e:
            # Gone already (404), or a new pod of the same name (409: uid precondition).
            if getattr(e, "status", None) not in (404, 409):
                raise

    async def event(
        self, pod: Mapping[str, Any], container: str, kind: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event like the kubelet's (best effort: failures are logged)."""
        meta = pod["metadata"]
        now = now_iso()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "fieldPath": f"spec.containers{{{container}}}",
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {
                "component": self._component,
                "host": (pod.get("spec") or {}).get("nodeName", ""),
            },
        }
        try:
            await asyncio.to_thread(
                self._core.create_namespaced_event, meta["namespace"], body, _request_timeout=10
            )
        except Exception as e:
            log.debug(
                "event %s for %s/%s not written: %s", reason, meta["namespace"], meta["name"], e
            )


def now_iso() -> str:
    """The current time as the API writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----- probes -----------------------------------------------------------------


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """A tcpSocket probe: success if a TCP connection opens within the timeout
    (Configure Liveness, Readiness and Startup Probes, "Define a TCP liveness
    probe"); the failure text is worded like the kubelet's."""
    address = f"{host}:{port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return False, f"dial tcp {address}: i/o timeout"
    except OSError as e:
        detail = "connection refused" if isinstance(e, ConnectionRefusedError) else str(e)
        return False, f"dial tcp {address}: connect: {detail}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


ProbeCheck = Callable[[str, int, float], Awaitable[tuple[bool, str]]]


# ----- one pod ----------------------------------------------------------------


def _grace_seconds(pod: Mapping[str, Any]) -> float:
    spec = pod.get("spec") or {}
    value = spec.get("terminationGracePeriodSeconds")
    return float(DEFAULT_GRACE_SECONDS if value is None else value)


def _completed(shown: Mapping[str, Any] | None) -> Body | None:
    """An init container's ``state.terminated`` when it completed (exit 0)."""
    terminated = ((shown or {}).get("state") or {}).get("terminated")
    return terminated if terminated and terminated.get("exitCode") == 0 else None


def _prestop_sleep(container: Mapping[str, Any]) -> float:
    """The preStop ``sleep`` action's seconds (other handlers are not emulated)."""
    pre_stop = ((container.get("lifecycle") or {}).get("preStop")) or {}
    return float((pre_stop.get("sleep") or {}).get("seconds") or 0)


class PodKubelet:
    """The kubelet's work for one pod, from its IP to its deletion."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        api: PodApi,
        factory: ProcessFactory,
        probe: ProbeCheck = tcp_probe,
        init_runner: InitRunner | None = None,
    ) -> None:
        from .config import find_server_container

        self.pod: Mapping[str, Any] = pod
        self._api = api
        self._factory = factory
        self._probe = probe
        self._init_runner = init_runner
        shown_inits = {
            c.get("name"): c for c in (pod.get("status") or {}).get("initContainerStatuses") or []
        }
        # Init containers (Pod Lifecycle, "Init containers"): run one by one
        # before the server; one that already completed (a restarted stand-in)
        # is not run again, as the kubelet does not rerun them for a live pod.
        self.init_records = [
            ContainerRecord(
                str(c.get("name", "")),
                str(c.get("image", "")),
                waiting_reason="PodInitializing",
                terminated=_completed(shown_inits.get(c.get("name"))),
                ready=_completed(shown_inits.get(c.get("name"))) is not None,
            )
            for c in (pod.get("spec") or {}).get("initContainers") or []
        ]
        self._init_process: InitProcess | None = None
        container = (
            find_server_container(pod) or ((pod.get("spec") or {}).get("containers") or [{}])[0]
        )
        self.container: Mapping[str, Any] = container
        self.name = str(container.get("name", ""))
        # A restarted stand-in finds the pod as the last kubelet left it: the
        # count and the last run carry over (a real kubelet keeps them too).
        shown: Mapping[str, Any] = next(
            (c for c in (pod.get("status") or {}).get("containerStatuses") or []
             if c.get("name") == self.name),
            {},
        )  # fmt: skip
        self.record = ContainerRecord(
            self.name,
            str(container.get("image", "")),
            restart_count=int(shown.get("restartCount") or 0),
            last_terminated=(shown.get("lastState") or {}).get("terminated"),
            waiting_reason="PodInitializing" if self.init_records else "ContainerCreating",
        )
        # Other containers of the pod (none in what the operator renders) just run.
        self._others = [
            ContainerRecord(str(c.get("name")), str(c.get("image", "")))
            for c in (pod.get("spec") or {}).get("containers") or []
            if c.get("name") != self.name
        ]
        self.process: ServerProcess | None = None
        self._changed = asyncio.Event()
        self._deleting = asyncio.Event()
        self._dirty = asyncio.Event()
        self._start_time = ""
        self._sandbox_ip = ""
        self._background: set[asyncio.Task[None]] = set()

    # -- observe

    @property
    def key(self) -> str:
        """``namespace/name`` for logs."""
        meta = self.pod.get("metadata") or {}
        return f"{meta.get('namespace')}/{meta.get('name')}"

    def observe(self, pod: Mapping[str, Any]) -> None:
        """The pod as the latest watch event shows it."""
        self.pod = pod
        meta = pod.get("metadata") or {}
        if isinstance(self.process, TakesAnnotations):
            self.process.update_annotations(meta.get("annotations") or {})
        if meta.get("deletionTimestamp"):
            self._deleting.set()
        self._changed.set()
        # A gate condition may have changed: Ready is recomputed against it.
        self._dirty.set()

    def _on_sandbox(self, pod: Mapping[str, Any]) -> Mapping[str, Any]:
        """The pod as its containers see it: on the sandbox's IP, whatever podIP says now."""
        status = pod.get("status") or {}
        if not self._sandbox_ip or status.get("podIP") == self._sandbox_ip:
            return pod
        return {**pod, "status": {**status, "podIP": self._sandbox_ip}}

    @property
    def _ip(self) -> str:
        return str((self.pod.get("status") or {}).get("podIP") or "")

    # -- the pod's life

    async def run(self) -> None:
        """Start, supervise and restart the container until the pod is deleted."""
        publisher = asyncio.create_task(self._publish_loop(), name=f"{self.key} status")
        try:
            while not (self._ip or self._deleting.is_set()):
                self._changed.clear()
                await self._changed.wait()
            # The sandbox's IP: the containers run on it for the pod's life.
            self._sandbox_ip = self._ip
            if not self._deleting.is_set() and await self._initialize():
                await self._supervise()
            await self._api.delete_now(self.pod)
            log.info("pod %s: containers stopped, pod object deleted", self.key)
        except Exception:
            log.exception("pod %s: kubelet emulation failed", self.key)
        finally:
            publisher.cancel()
            if self.process is not None:
                with contextlib.suppress(Exception):
                    await self.process.kill()
            if self._init_process is not None:
                with contextlib.suppress(Exception):
                    await self._init_process.kill()

    async def _initialize(self) -> bool:
        """Pod Lifecycle, "Init containers": run each to completion, in order,
        before the server's container starts; one that fails is restarted
        with the crash-loop back-off (restartPolicy Always) and the next
        waits. Returns False when the pod is deleted first."""
        if not self.init_records:
            return True
        self._start_time = now_iso()
        self._dirty.set()
        specs = (self.pod.get("spec") or {}).get("initContainers") or []
        for index, container in enumerate(specs):
            backoff: float | None = None
            while self.init_records[index].terminated is None:
                if self._deleting.is_set():
                    return False
                ran = await self._run_init(index, container)
                if ran is None:
                    return False
                if self.init_records[index].terminated is not None:
                    break
                backoff = decide.next_backoff(backoff, ran)
                name = self.init_records[index].name
                if self.init_records[index].waiting_reason != "CreateContainerConfigError":
                    self._set_init(
                        index,
                        waiting_reason="CrashLoopBackOff",
                        waiting_message=decide.crash_loop_message(backoff, name, self.pod),
                    )
                    self._emit(
                        "Warning",
                        "BackOff",
                        f"Back-off restarting failed container {name} in pod "
                        f"{decide.pod_ref(self.pod)}",
                        container=name,
                    )
                await wait_event(self._deleting, backoff)
        self._set(waiting_reason="ContainerCreating")
        return not self._deleting.is_set()

    async def _run_init(self, index: int, container: Mapping[str, Any]) -> float | None:
        """One run of init container `index`; how long it ran, None if the pod went."""
        record = self.init_records[index]
        if self._init_runner is None:
            # No runner (kwok-only setups): shown as done at once, as before.
            self._set_init(
                index, terminated=decide.terminated_state(0, "", now_iso(), now_iso(), "")
            )
            return 0.0
        try:
            # The kubelet reads the Secrets env entries name when the container starts.
            process = await asyncio.to_thread(self._init_runner.prepare, self.pod, container)
        except Exception as e:
            log.warning("pod %s: init container %s cannot be created: %s", self.key, record.name, e)
            self._set_init(
                index, waiting_reason="CreateContainerConfigError", waiting_message=str(e)
            )
            self._emit("Warning", "Failed", f"Error: {e}", container=record.name)
            return 0.0
        container_id = f"standin://{uuid.uuid4().hex}"
        started_at = now_iso()
        started_mono = time.monotonic()
        self._init_process = process
        self._emit("Normal", "Started", f"Started container {record.name}", container=record.name)
        self._set_init(
            index, running_since=started_at, container_id=container_id,
            waiting_reason="", waiting_message="",
        )  # fmt: skip
        run_task = asyncio.ensure_future(process.run())
        deleting = asyncio.create_task(self._deleting.wait())
        try:
            await asyncio.wait({run_task, deleting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deleting.cancel()
        if not run_task.done():
            await process.kill()
            self._init_process = None
            return None
        self._init_process = None
        code = run_task.result()
        message = decide.termination_message(
            container.get("terminationMessagePolicy"), code, "", tuple(process.log_lines)
        )
        state = decide.terminated_state(code, message, started_at, now_iso(), container_id)
        log.info(
            "pod %s: init container %s exited with code %d after %.2f s",
            self.key, record.name, code, time.monotonic() - started_mono,
        )  # fmt: skip
        if code == 0:
            self._set_init(index, running_since=None, terminated=state, ready=True)
        else:
            self._set_init(
                index, running_since=None, restart_count=record.restart_count + 1,
                last_terminated=state,
            )  # fmt: skip
        return time.monotonic() - started_mono

    def _set_init(self, index: int, **changes: Any) -> None:
        self.init_records[index] = replace(self.init_records[index], **changes)
        self._dirty.set()

    async def _supervise(self) -> None:
        """Pod Lifecycle, "Container restarts" (restartPolicy Always): run the
        container, and after every exit wait the back-off, then start it again."""
        self._start_time = self._start_time or now_iso()
        self._others = [
            replace(r, running_since=self._start_time, started=True, ready=True, container_id="")
            for r in self._others
        ]
        backoff: float | None = None
        while not self._deleting.is_set():
            ran = await self._run_container()
            if ran is None:
                return
            backoff = decide.next_backoff(backoff, ran)
            message = decide.crash_loop_message(backoff, self.name, self.pod)
            self._set(waiting_reason="CrashLoopBackOff", waiting_message=message)
            self._emit(
                "Warning",
                "BackOff",
                f"Back-off restarting failed container {self.name} in pod "
                f"{decide.pod_ref(self.pod)}",
            )
            await wait_event(self._deleting, backoff)

    async def _run_container(self) -> float | None:
        """One run; returns how long it ran, or None when the pod is being
        deleted (the container was stopped for it)."""
        container_id = f"standin://{uuid.uuid4().hex}"
        started_at = now_iso()
        started_mono = time.monotonic()
        try:
            process = self._factory(self._on_sandbox(self.pod))
        except Exception as e:
            log.warning("pod %s: container cannot start: %s", self.key, e)
            self._finished(
                ExitStatus(BAD_FLAGS_EXIT_CODE, "Error", (str(e),)), started_at, container_id
            )
            return 0.0
        self.process = process
        self.observe(self.pod)  # hand it the current annotations
        self._emit("Normal", "Created", f"Created container: {self.name}")
        self._set(
            running_since=started_at, started=False, ready=False, container_id=container_id,
            waiting_reason="", waiting_message="",
        )  # fmt: skip
        self._emit("Normal", "Started", f"Started container {self.name}")
        kill_request: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        run_task = asyncio.ensure_future(process.run())
        probes = asyncio.create_task(self._probe_all(started_mono, kill_request))
        deleting = asyncio.create_task(self._deleting.wait())
        try:
            waits: set[asyncio.Future[Any]] = {run_task, kill_request, deleting}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            probes.cancel()
            if run_task.done():
                status: ExitLike = run_task.result()
            elif self._deleting.is_set():
                self._emit("Normal", "Killing", f"Stopping container {self.name}")
                status = await self._stop(process, run_task, self._deletion_grace())
                self.process = None
                return None
            else:
                self._emit("Normal", "Killing", kill_request.result())
                status = await self._stop(process, run_task, _grace_seconds(self.pod))
        finally:
            deleting.cancel()
            probes.cancel()
        self._finished(status, started_at, container_id)
        self.process = None
        return time.monotonic() - started_mono

    def _finished(self, status: ExitLike, started_at: str, container_id: str) -> None:
        """Record a run's end: lastState.terminated, restartCount + 1 (Pod
        Lifecycle, "Container states"; Determine the Reason for Pod Failure)."""
        tail = status.log_tail or tuple(self.process.log_lines if self.process else ())
        message = decide.termination_message(
            self.container.get("terminationMessagePolicy"), status.code, "", tail
        )
        terminated = decide.terminated_state(
            status.code, message, started_at, now_iso(), container_id
        )
        log.info("pod %s: container exited with code %d", self.key, status.code)
        self._set(
            running_since=None, started=False, ready=False,
            restart_count=self.record.restart_count + 1, last_terminated=terminated,
        )  # fmt: skip

    def _deletion_grace(self) -> float:
        meta = self.pod.get("metadata") or {}
        value = meta.get("deletionGracePeriodSeconds")
        return _grace_seconds(self.pod) if value is None else float(value)

    async def _stop(
        self, process: ServerProcess, run_task: asyncio.Future[ExitLike], grace: float
    ) -> ExitLike:
        """Pod Lifecycle, "Termination of Pods": the preStop hook runs first
        (the server keeps serving), then SIGTERM, which tensorflow_model_server
        ignores (BRIEF: as PID 1), so the run ends with SIGKILL when the grace
        period, counted from the start of termination, is over."""
        deadline = time.monotonic() + grace
        pre_stop = min(_prestop_sleep(self.container), grace)
        if pre_stop > 0:
            log.info("pod %s: preStop sleep %.0f s", self.key, pre_stop)
            await asyncio.wait({run_task}, timeout=pre_stop)
        if not run_task.done():
            await asyncio.wait({run_task}, timeout=max(0.0, deadline - time.monotonic()))
        if run_task.done():
            return run_task.result()
        await process.kill()
        await asyncio.wait({run_task}, timeout=5)
        tail = tuple(process.log_lines)
        return ExitStatus(SIGKILL_EXIT_CODE, "Error", tail)

    # -- probes

    async def _probe_all(self, started_mono: float, kill: asyncio.Future[str]) -> None:
        """Startup probe first; liveness and readiness only once it succeeded
        (Configure Liveness, Readiness and Startup Probes, "Protect slow
        starting containers with startup probes")."""
        startup = decide.probe_spec(self.container, "startup")
        if startup is not None:
            result = await self._probe_until(startup, started_mono, lambda r: r is not None)
            if result is False:
                self._request_kill(
                    kill, f"Container {self.name} failed startup probe, will be restarted"
                )
                return
        self._set(started=True)
        readiness = decide.probe_spec(self.container, "readiness")
        liveness = decide.probe_spec(self.container, "liveness")
        if readiness is None:
            # No readiness probe: ready as soon as started (Pod Lifecycle, "Container probes").
            self._set(ready=True)
            ready_task = None
        else:
            never = self._probe_until(readiness, started_mono, lambda r: False, self._readiness)
            ready_task = asyncio.create_task(never)
        try:
            if liveness is not None:
                await self._probe_until(liveness, started_mono, lambda r: r is False)
                message = f"Container {self.name} failed liveness probe, will be restarted"
                self._request_kill(kill, message)
            elif ready_task is not None:
                await ready_task
        finally:
            if ready_task is not None:
                ready_task.cancel()

    def _readiness(self, result: bool | None) -> None:
        self._set(ready=bool(result))

    def _request_kill(self, kill: asyncio.Future[str], message: str) -> None:
        if not kill.done():
            kill.set_result(message)

    async def _probe_until(
        self,
        spec: ProbeSpec,
        started_mono: float,
        stop_when: Callable[[bool | None], bool],
        on_change: Callable[[bool | None], None] | None = None,
    ) -> bool | None:
        """Probe every period from initialDelaySeconds after the container
        started; returns the result that ``stop_when`` accepted."""
        state = decide.initial_probe_state(spec.kind)
        first = decide.first_probe_at(started_mono, time.monotonic(), spec)
        await asyncio.sleep(max(0.0, first - time.monotonic()))
        while True:
            ok, detail = await self._probe(self._sandbox_ip, spec.port, spec.timeout)
            if not ok:
                self._emit(
                    "Warning", "Unhealthy", f"{spec.kind.capitalize()} probe failed: {detail}"
                )
            new = decide.record_probe(state, ok, spec)
            if new.result != state.result and on_change is not None:
                on_change(new.result)
            state = new
            if stop_when(state.result):
                return state.result
            await asyncio.sleep(spec.period)

    # -- apply

    def _set(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)
        self._dirty.set()

    def _emit(self, kind: str, reason: str, message: str, container: str = "") -> None:
        task = asyncio.create_task(
            self._api.event(self.pod, container or self.name, kind, reason, message)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_loop(self) -> None:
        """Write the status whenever the record or the pod changed and the pod
        does not show what it should (coalesced: one write per change burst)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not self._start_time:
                continue
            patch = decide.status_patch(
                self.pod,
                [self.record, *self._others],
                self._start_time,
                now_iso(),
                self.init_records,
                self._sandbox_ip,
            )
            if patch is None:
                continue
            try:
                await self._api.patch_status(self.pod, patch)
            except Exception as e:
                if getattr(e, "status", None) == 404:
                    return
                log.warning("pod %s: status write failed (%s); retrying", self.key, e)
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                self._dirty.set()


# ----- every pod --------------------------------------------------------------


class PodKubelets:
    """One ``PodKubelet`` per scheduled model-server pod, fed by the pod watch."""

    def __init__(
        self,
        api: PodApi,
        factory: ProcessFactory,
        probe: ProbeCheck = tcp_probe,
        init_runner: InitRunner | None = None,
    ) -> None:
        self._api = api
        self._factory = factory
        self._probe = probe
        self._init_runner = init_runner
        self._pods: dict[str, PodKubelet] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Pods this kubelet deleted: late events for them must not start them again.
        self._finished: set[str] = set()

    @property
    def kubelets(self) -> dict[str, PodKubelet]:
        """The pods being looked after, by uid."""
        return dict(self._pods)

    def resync(self, pods: list[dict[str, Any]]) -> None:
        """A fresh full list: look after what it holds, forget what it lacks."""
        seen = set()
        for pod in pods:
            seen.add((pod.get("metadata") or {}).get("uid", ""))
            self.event("MODIFIED", pod)
        for uid in list(self._pods):
            if uid not in seen:
                self._forget(uid)

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        """One watch event for a labelled pod."""
        uid = (pod.get("metadata") or {}).get("uid", "")
        if kind == "DELETED":
            self._forget(uid)
            self._finished.discard(uid)
            return
        if uid in self._finished:
            return
        kubelet = self._pods.get(uid)
        if kubelet is not None:
            kubelet.observe(pod)
            return
        if not (pod.get("spec") or {}).get("nodeName"):
            return  # not scheduled: no kubelet has it yet
        kubelet = PodKubelet(pod, self._api, self._factory, self._probe, self._init_runner)
        self._pods[uid] = kubelet
        kubelet.observe(pod)
        task = asyncio.create_task(kubelet.run(), name=f"kubelet {kubelet.key}")
        self._tasks[uid] = task
        task.add_done_callback(lambda _: self._done(uid))

    def _done(self, uid: str) -> None:
        if self._pods.pop(uid, None) is not None:
            self._finished.add(uid)
        self._tasks.pop(uid, None)

    def _forget(self, uid: str) -> None:
        """The pod object is gone: stop its container now."""
        self._pods.pop(uid, None)
        task = self._tasks.pop(uid, None)
        if task is not None and not task.done():
            task.cancel()

    async def stop_all(self) -> None:
        """Stop every container (shutdown); the pods stay as they are."""
        tasks = list(self._tasks.values())
        for uid in list(self._tasks):
            self._forget(uid)
        await asyncio.gather(*tasks, return_exceptions=True)
