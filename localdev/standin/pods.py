"""Which pods to serve: a resilient Kubernetes watch, and one ``PodServer`` per pod.

The stand-in process feeds the pod watch to the kubelet emulation
(``kubelet.PodKubelets``), which starts, probes, restarts and stops a server
per container run; ``PodSupervisor`` below is the simpler "serve every
Running pod" loop, kept for the in-process stand-in tests.

Pods labelled ``serving.tfoperator.dev/servedmodel`` (any value, any
namespace) are served while ``status.phase`` is Running and ``status.podIP``
is set, Terminating included (the real server ignores SIGTERM and serves
through the grace period), and stopped when the pod object is gone. Each pod
gets one run of the server (``PodServer.run``); a run that exits is logged
and not restarted (restarts are the kubelet's job, emulated elsewhere).

Watches run in threads (the kubernetes client is synchronous) and hand events
to the event loop. They list, then watch from the list's resourceVersion;
they relist on expiry (410 Gone) and on any API error, with a capped backoff,
because the API server may restart during tests. ConfigMaps are watched too,
so that config files on configMap volumes are read from a local cache instead
of one API call per pod per config poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .paths import ClusterLookup, PathError
from .server import BadPod, PodServer, Runtime, serving_spec_from_pod

log = logging.getLogger(__name__)

SERVED_MODEL_LABEL = "serving.tfoperator.dev/servedmodel"
WATCH_TIMEOUT_SECONDS = 30
MAX_BACKOFF_SECONDS = 8.0


class _Expired(Exception):
    pass


EventHandler = Callable[[str, dict[str, Any]], None]
ResyncHandler = Callable[[list[dict[str, Any]]], None]


class Watcher:
    """List-then-watch of one resource kind in a thread, restarted on any failure.

    ``on_resync`` gets the full list after every (re)list, ``on_event`` every
    ADDED/MODIFIED/DELETED event; both are called from the watcher's thread.
    """

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        on_resync: ResyncHandler,
        on_event: EventHandler,
        **list_kwargs: Any,
    ) -> None:
        self.kind = kind
        self._list_fn = list_fn
        self._on_resync = on_resync
        self._on_event = on_event
        self._list_kwargs = list_kwargs
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)

    def start(self) -> None:
        """Start the watch thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (it is a daemon: nobody waits for it)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _run(self) -> None:
        backoff = 0.5
        last_error = ""
        while not self._stop.is_set():
            try:
                version = self._list()
                if last_error:
                    log.info("%s watch: API reachable again", self.kind)
                    last_error = ""
                backoff = 0.5
                self._watch_from(version)
            except _Expired:
                log.info("%s watch: resourceVersion expired, relisting", self.kind)
            except Exception as e:
                if self._stop.is_set():
                    return
                message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                if message != last_error:
                    log.warning("%s watch failed (%s); retrying with backoff", self.kind, message)
                    last_error = message
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _list(self) -> str:
        response = self._list_fn(_preload_content=False, _request_timeout=30, **self._list_kwargs)
        data = json.loads(response.data)
        self._on_resync(list(data.get("items") or []))
        return str(data["metadata"]["resourceVersion"])

    def _watch_from(self, version: str) -> None:
        while not self._stop.is_set():
            self._watch = watch.Watch()
            try:
                stream = self._watch.stream(
                    self._list_fn,
                    resource_version=version,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                    _request_timeout=WATCH_TIMEOUT_SECONDS + 15,
                    allow_watch_bookmarks=True,
                    # Plain dicts: no model objects to build for every event.
                    deserialize=False,
                    **self._list_kwargs,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    kind = event["type"]
                    obj = event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Expired()
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._on_event(kind, obj)
            except ApiException as e:
                if e.status == 410:
                    raise _Expired() from None
                raise
            finally:
                self._watch.stop()


def _api_dict(api: client.CoreV1Api, obj: Any) -> dict[str, Any]:
    return dict(api.api_client.sanitize_for_serialization(obj))


class KubeLookup:
    """``ClusterLookup`` over the API: ConfigMaps from a watch-fed cache,
    claims and volumes read on demand (a bound claim's volume never changes)."""

    def __init__(self, api: client.CoreV1Api) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self._synced = False

    def configmaps_resync(self, items: list[dict[str, Any]]) -> None:
        """Replace the ConfigMap cache with a fresh list."""
        fresh = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}
        with self._lock:
            self._configmaps = fresh
            self._synced = True

    def configmaps_event(self, kind: str, obj: dict[str, Any]) -> None:
        """Apply one ConfigMap watch event to the cache."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._lock:
            if kind == "DELETED":
                self._configmaps.pop(key, None)
            else:
                self._configmaps[key] = obj

    def _read(self, what: str, fn: Callable[..., Any], *args: str) -> dict[str, Any] | None:
        try:
            return _api_dict(self._api, fn(*args, _request_timeout=10))
        except ApiException as e:
            if e.status == 404:
                return None
            raise PathError(f"reading {what} failed: API error {e.status} {e.reason}") from None
        except Exception as e:
            raise PathError(f"reading {what} failed: {type(e).__name__}: {e}") from None

    def get_configmap(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The ConfigMap from the watch cache (or the API before the first list)."""
        with self._lock:
            if self._synced:
                return self._configmaps.get((namespace, name))
        return self._read(
            f"ConfigMap {namespace}/{name}",
            self._api.read_namespaced_config_map,
            name,
            namespace,
        )

    def get_pvc(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The claim, read from the API."""
        return self._read(
            f"PersistentVolumeClaim {namespace}/{name}",
            self._api.read_namespaced_persistent_volume_claim,
            name,
            namespace,
        )

    def get_pv(self, name: str) -> Mapping[str, Any] | None:
        """The volume, read from the API."""
        return self._read(f"PersistentVolume {name}", self._api.read_persistent_volume, name)

    def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Secret, read from the API when an init container starts (as the
        kubelet does); its values go to that process's environment only."""
        return self._read(
            f"Secret {namespace}/{name}", self._api.read_namespaced_secret, name, namespace
        )


def should_serve(pod: Mapping[str, Any]) -> bool:
    """Running with an IP: the real server would be up (Terminating included)."""
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("podIP"))


@dataclass
class _Served:
    pod: dict[str, Any]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    server: PodServer | None = None
    task: asyncio.Task[None] | None = None


class PodSupervisor:
    """Keeps one ``PodServer`` per servable pod, in the event loop."""

    def __init__(self, runtime: Runtime, lookup: ClusterLookup) -> None:
        self._runtime = runtime
        self._lookup = lookup
        self._served: dict[str, _Served] = {}

    @property
    def servers(self) -> dict[str, PodServer]:
        """Pod servers that serve (initial load done, run not ended) by pod uid."""
        return {
            uid: s.server
            for uid, s in self._served.items()
            if s.server is not None and s.server.serving
        }

    def resync(self, pods: list[dict[str, Any]]) -> None:
        """A fresh full list: serve what it holds, stop what it lacks."""
        seen = set()
        for pod in pods:
            uid = (pod.get("metadata") or {}).get("uid", "")
            seen.add(uid)
            self.event("MODIFIED", pod)
        for uid in list(self._served):
            if uid not in seen:
                self._stop(uid, "gone after relist")

    def event(self, kind: str, pod: dict[str, Any]) -> None:
        """One watch event for a pod."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        if kind == "DELETED":
            self._stop(uid, "pod deleted")
            return
        served = self._served.get(uid)
        if not should_serve(pod):
            if served is not None:
                phase = (pod.get("status") or {}).get("phase")
                self._stop(uid, f"phase {phase}")
            return
        if served is None:
            served = _Served(pod)
            self._served[uid] = served
            served.task = asyncio.create_task(self._serve(served), name=f"pod {uid}")
        else:
            served.pod = pod
            if served.server is not None:
                served.server.update_annotations(meta.get("annotations") or {})

    def _stop(self, uid: str, why: str) -> None:
        served = self._served.pop(uid, None)
        if served is not None:
            meta = served.pod.get("metadata") or {}
            log.info("pod %s/%s: %s", meta.get("namespace"), meta.get("name"), why)
            served.stop.set()

    async def _serve(self, served: _Served) -> None:
        meta = served.pod.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        try:
            spec = serving_spec_from_pod(served.pod, self._lookup)
        except BadPod as e:
            log.error("pod %s: not served: %s", key, e)
            return
        except Exception:
            log.exception("pod %s: not served: unexpected error reading it", key)
            return
        server = PodServer(spec, self._runtime)
        served.server = server
        # The pod may have changed since the event: take its latest annotations.
        server.update_annotations((served.pod.get("metadata") or {}).get("annotations") or {})
        run = asyncio.create_task(server.run(), name=f"pod {key} run")
        stop = asyncio.create_task(served.stop.wait(), name=f"pod {key} stop")
        try:
            await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
            if run.done() and not run.cancelled() and run.exception() is None:
                # Until the kubelet emulation restarts it, the pod just stays down.
                status = run.result()
                log.warning(
                    "pod %s: model server exited with code %d (%s); last lines:\n%s",
                    key,
                    status.code,
                    status.reason,
                    "\n".join(status.log_tail[-10:]),
                )
                await served.stop.wait()
        finally:
            stop.cancel()
            try:
                await server.kill()
                await run
            except Exception:
                log.exception("pod %s: error while stopping", key)

    async def stop_all(self) -> None:
        """Stop every pod server (shutdown)."""
        tasks = [s.task for s in self._served.values() if s.task is not None]
        for uid in list(self._served):
            self._stop(uid, "stand-in shutting down")
        await asyncio.gather(*tasks, return_exceptions=True)
