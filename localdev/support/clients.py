"""Clients of the model servers, for tests, the demo and the benchmarks.

A model server pod in the local cluster listens on its own pod IP (127.1.x.x)
and Services get no endpoints there, so these clients do what a client-side
load balancer on a headless Service does: follow the ServedModel's pods with
a watch and send requests to the ones that are Ready and not terminating at
each moment.

- `PodWatcher` keeps the current pods of one ServedModel, and when each first
  turned Ready, from a watch in a thread.
- `model_status` asks one server GetModelStatus with tensorflow-serving-api's
  own stub (the operator's client is not used: this checks it from outside).
- `PredictLoad` sends Predict requests without pause to the serving pods and
  reports every failure and which version answered each request.

These import tensorflow-serving-api, hence TensorFlow: never from the operator.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from kubernetes import client, watch
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfserving_operator import api

# half_plus_three: y = 0.5 * x + 3 (the model every test version is a copy of).
PREDICT_INPUT = (1.0, 2.0, 5.0)
PREDICT_EXPECTED = (3.5, 4.0, 5.5)


@dataclass(frozen=True)
class PodInfo:
    """One model server pod as a client sees it."""

    name: str
    ip: str
    grpc_port: int
    phase: str
    ready: bool
    gate: str | None  # the availability gate's status ("True"/"False"), None if unset
    gate_reason: str
    terminating: bool
    versions: str  # the pod's version annotation, e.g. "2" or "1,2"
    config_hash: str
    # The model server container's last exit (state.terminated, else
    # lastState.terminated): its code and termination message; None, "" if none.
    exit_code: int | None = None
    exit_message: str = ""

    @property
    def target(self) -> str:
        """host:port of its gRPC server."""
        return f"{self.ip}:{self.grpc_port}"

    @property
    def serving(self) -> bool:
        """What an endpoints controller would route to: Ready, not terminating."""
        return self.ready and not self.terminating and bool(self.ip)


def pod_info(pod: dict[str, Any]) -> PodInfo:
    """A PodInfo from a Pod as plain JSON."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or ()}
    gate = conditions.get(api.GATE_CONDITION) or {}
    server = next(
        (c for c in status.get("containerStatuses") or () if c.get("name") == api.CONTAINER_NAME),
        {},
    )
    exited = (server.get("state") or {}).get("terminated") or (server.get("lastState") or {}).get(
        "terminated"
    )
    return PodInfo(
        name=meta.get("name", ""),
        ip=status.get("podIP") or "",
        grpc_port=int(annotations.get(api.ANNOTATION_GRPC_PORT) or 8500),
        phase=status.get("phase") or "",
        ready=(conditions.get("Ready") or {}).get("status") == "True",
        gate=gate.get("status"),
        gate_reason=str(gate.get("reason") or ""),
        terminating=meta.get("deletionTimestamp") is not None,
        versions=annotations.get(api.ANNOTATION_VERSIONS, ""),
        config_hash=annotations.get(api.ANNOTATION_CONFIG_HASH, ""),
        exit_code=int(exited["exitCode"]) if exited else None,
        exit_message=str((exited or {}).get("message") or ""),
    )


class PodWatcher:
    """The pods of one ServedModel, kept current by a watch in a daemon thread.

    `ready_at[name]` is the monotonic time the watch first showed the pod Ready;
    `history` every (time, PodInfo) seen, in order.

    A watch that breaks (an API error, an expired resourceVersion) is followed
    by a fresh list, and what changed in between was never seen: a test that
    asserts "never Ready while LOADING" over the history would pass over the
    gap. So every relist after the first is kept in `relists`, and leaving the
    `with` block fails the test if there was one (`check_no_gap` does it
    earlier).
    """

    def __init__(self, api_client: Any, namespace: str, servedmodel: str) -> None:
        self._core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.selector = f"{api.LABEL_SERVEDMODEL}={servedmodel}"
        self._pods: dict[str, PodInfo] = {}
        self.ready_at: dict[str, float] = {}
        self.history: list[tuple[float, PodInfo]] = []
        self.relists: list[tuple[float, str]] = []  # (when, why) after the first list
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watcher", daemon=True)

    def start(self) -> PodWatcher:
        """Start watching; return once the first list is in."""
        self._thread.start()
        if not self._synced.wait(timeout=30):
            raise AssertionError(f"pods of {self.selector} could not be listed")
        return self

    def stop(self) -> None:
        """Stop the watch thread (it ends at its next event or watch timeout)."""
        self._stop.set()
        self._thread.join(timeout=1.0)

    def __enter__(self) -> PodWatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.check_no_gap()

    def check_no_gap(self) -> None:
        """Fail if the watch had to relist since it started (transitions were missed)."""
        with self._lock:
            relists = list(self.relists)
        if relists:
            raise AssertionError(
                f"the watch of pods {self.selector} broke and relisted {len(relists)} time(s); "
                f"transitions in the gap were not seen: {[why for _, why in relists]}"
            )

    def pods(self) -> dict[str, PodInfo]:
        """Every current pod by name."""
        with self._lock:
            return dict(self._pods)

    def serving(self) -> list[PodInfo]:
        """Pods Ready and not terminating now, by name."""
        with self._lock:
            return sorted((p for p in self._pods.values() if p.serving), key=lambda p: p.name)

    def wait(self, predicate: Callable[[dict[str, PodInfo]], bool], timeout: float) -> bool:
        """Wait until `predicate(pods)` holds (re-checked at every watch event)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(dict(self._pods)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(timeout=min(left, 0.5))
            return True

    def _record(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        info = pod_info(obj)
        with self._changed:
            if kind == "DELETED":
                self._pods.pop(info.name, None)
            else:
                self._pods[info.name] = info
                if info.ready:
                    self.ready_at.setdefault(info.name, now)
            self.history.append((now, info))
            self._changed.notify_all()

    def _relist(self) -> str:
        """Replace the pods with a fresh list, at once (readers never see it empty)."""
        listed = self._core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, _preload_content=False
        )
        data = json.loads(listed.data)
        now = time.monotonic()
        fresh = {info.name: info for info in map(pod_info, data.get("items") or ())}
        with self._changed:
            self._pods = fresh
            for info in fresh.values():
                if info.ready:
                    self.ready_at.setdefault(info.name, now)
                self.history.append((now, info))
            self._changed.notify_all()
        self._synced.set()
        return str(data["metadata"]["resourceVersion"])

    def _run(self) -> None:
        version = ""
        why = ""
        while not self._stop.is_set():
            try:
                if not version:
                    if self._synced.is_set():
                        with self._lock:
                            self.relists.append((time.monotonic(), why))
                    version = self._relist()
                # Short watches, resumed from the last event, so stop() is
                # quick; an expired resourceVersion (ERROR) means a relist.
                stream = watch.Watch().stream(
                    self._core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=2,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        version = ""
                        why = f"watch ERROR: {obj.get('message', obj)}"
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._record(kind, obj)
            except Exception as err:
                version = ""
                why = repr(err)
                if self._stop.wait(0.2):
                    return


@dataclass(frozen=True)
class VersionState:
    """One version's state as a server reports it."""

    version: int
    state: str  # "LOADING", "AVAILABLE", "END", ...
    error_message: str


def model_status(
    target: str, model_name: str, timeout: float = 2.0, channel: grpc.Channel | None = None
) -> list[VersionState]:
    """GetModelStatus at `target` (host:port) with tensorflow-serving-api's stub.

    Raises grpc.RpcError when the server does not answer or knows no version.
    """
    own = channel is None
    chan = channel or grpc.insecure_channel(target)
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(chan)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model_name
        response = stub.GetModelStatus(request, timeout=timeout)
    finally:
        if own:
            chan.close()
    return [
        VersionState(
            version=int(s.version),
            state=get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
            error_message=str(s.status.error_message),
        )
        for s in response.model_version_status
    ]


def predict_request(model_name: str, label: str | None = None) -> predict_pb2.PredictRequest:
    """A half_plus_three Predict request (latest version, or the version under `label`)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if label is not None:
        request.model_spec.version_label = label
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(PREDICT_INPUT))]
        ),
        float_val=list(PREDICT_INPUT),
    )
    request.inputs["x"].CopyFrom(tensor)
    return request


def predict(
    target: str, model_name: str, label: str | None = None, timeout: float = 5.0
) -> tuple[int, tuple[float, ...]]:
    """One Predict at `target`: (version that answered, outputs)."""
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(model_name, label), timeout=timeout)
    return int(response.model_spec.version.value), tuple(response.outputs["y"].float_val)


@dataclass
class LoadReport:
    """What a `PredictLoad` saw."""

    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)
    pods: Counter[str] = field(default_factory=Counter)
    # Moments a worker found no pod to send to (capacity gone).
    no_serving_pod: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for assertion messages and the demo."""
        return (
            f"{self.sent} sent in {self.seconds:.1f} s, {self.ok} ok, "
            f"{len(self.failures)} failed, versions {dict(self.versions)}, "
            f"no serving pod {self.no_serving_pod} times; first failures: {self.failures[:5]}"
        )


class PredictLoad:
    """Predict requests without pause to whichever pods serve at each moment.

    Each of `workers` threads takes the next serving pod in turn (round robin
    over `PodWatcher.serving()`) and sends it one request, checking the answer
    (y = 0.5x + 3) and recording which version answered. Bounded by
    `max_requests` and `max_seconds`; `stop()` ends it and returns the report.
    """

    def __init__(
        self,
        pods: PodWatcher,
        model_name: str,
        label: str | None = None,
        workers: int = 2,
        max_requests: int = 200_000,
        max_seconds: float = 300.0,
        timeout: float = 5.0,
    ) -> None:
        self.pods = pods
        self.model_name = model_name
        self.label = label
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.report = LoadReport()
        self._request = predict_request(model_name, label)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._channels: dict[str, grpc.Channel] = {}
        self._turn = itertools.count()
        self._started = 0.0
        self._threads = [
            threading.Thread(target=self._work, name=f"predict-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> PredictLoad:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadReport:
        """Stop sending, wait for requests in flight, close channels; the report."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 2)
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self.report.seconds = time.monotonic() - self._started
        return self.report

    def __enter__(self) -> PredictLoad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def done(self) -> bool:
        """Stopped, or out of its request or time budget."""
        return self._stop.is_set()

    def snapshot(self) -> LoadReport:
        """A copy of the report so far."""
        with self._lock:
            r = self.report
            return LoadReport(
                r.sent,
                r.ok,
                list(r.failures),
                Counter(r.versions),
                Counter(r.pods),
                r.no_serving_pod,
                time.monotonic() - self._started,
            )

    def _stub(self, target: str) -> prediction_service_pb2_grpc.PredictionServiceStub:
        with self._lock:
            channel = self._channels.get(target)
            if channel is None:
                channel = self._channels[target] = grpc.insecure_channel(target)
        return prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def _budget_left(self) -> bool:
        with self._lock:
            spent = self.report.sent >= self.max_requests
        return not spent and time.monotonic() - self._started < self.max_seconds

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._budget_left():
                self._stop.set()
                return
            serving = self.pods.serving()
            if not serving:
                with self._lock:
                    self.report.no_serving_pod += 1
                time.sleep(0.01)
                continue
            pod = serving[next(self._turn) % len(serving)]
            outcome = self._send(pod)
            with self._lock:
                self.report.sent += 1
                if isinstance(outcome, str):
                    self.report.failures.append(outcome)
                else:
                    self.report.ok += 1
                    self.report.versions[outcome] += 1
                    self.report.pods[pod.name] += 1

    def _send(self, pod: PodInfo) -> int | str:
        """The version that answered, or a description of the failure."""
        try:
            response = self._stub(pod.target).Predict(self._request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            details = err.details() if hasattr(err, "details") else str(err)
            return f"{pod.name} ({pod.versions}): {code}: {details}"
        values = tuple(round(v, 4) for v in response.outputs["y"].float_val)
        if values != PREDICT_EXPECTED:
            return f"{pod.name}: wrong answer {values}"
        return int(response.model_spec.version.value)


@contextlib.contextmanager
def predict_load(
    api_client: Any, namespace: str, servedmodel: str, model_name: str, **kwargs: Any
) -> Iterator[PredictLoad]:
    """A PodWatcher plus a PredictLoad on it, both stopped on exit."""
    with PodWatcher(api_client, namespace, servedmodel) as pods:
        load = PredictLoad(pods, model_name, **kwargs).start()
        try:
            yield load
        finally:
            load.stop()


class _NeverAnswer(grpc.GenericRpcHandler):
    """Every call is accepted and held until the caller gives up (or the server stops)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
            while context.is_active() and not self._stop.wait(0.05):
                pass
            return b""

        return grpc.unary_unary_rpc_method_handler(hold)


@contextlib.contextmanager
def hung_grpc_server(workers: int = 32) -> Iterator[int]:
    """A gRPC server on every address of a free port that answers no call; yields the port.

    A wedged model server: connections and HTTP/2 streams open, no answer
    ever. Listening on the wildcard address of the port also keeps the
    stand-in from binding a pod IP on it, so every pod whose gRPC port is this
    one reaches this server instead.
    """
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hung-grpc"),
        handlers=[_NeverAnswer(stop)],
        options=[("grpc.so_reuseport", 0)],
    )
    port = server.add_insecure_port("0.0.0.0:0")
    server.start()
    try:
        yield port
    finally:
        stop.set()
        server.stop(grace=None)
