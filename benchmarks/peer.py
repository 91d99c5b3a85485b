"""A peer, side by side: KServe's controller and this operator on the same instance, same N.

KServe's manager (github.com/kserve/kserve/cmd/manager, KSERVE_VERSION) is
built from the Go module proxy in our build module `benchmarks/peer/` (its
go.mod repeats KServe's own replace and exclude lines, which a consumer must
carry) into ~/.cache/tfserving-operator/kserve/, once per machine. It runs as
a process against the benchmark's instance with the admin kubeconfig (as our
operator does here), in RawDeployment mode, with the CRDs it needs at start,
its `inferenceservice-config` ConfigMap (RawDeployment, no Istio virtual
host) and its TensorFlow ClusterServingRuntime. Its webhooks are not
registered (with zero replicas there is no pod to mutate; a defaulting
webhook is not needed for the tensorflow predictor); the webhook server
still starts, on a self-signed pair, because the manager exits without one.

Each side gets the same N models, created by 8 client threads in a fresh
namespace, zero replicas (KServe: `serving.kserve.io/autoscalerClass: none`),
and is timed from the first create until every one is Ready:
- KServe: the InferenceService's Ready condition is True (its Deployment,
  Service exist and the Deployment is Available; nothing asks a server);
- ours: the ServedModel's Ready condition is True for its generation, after
  its five children are applied (convergence.py).
Requests are each client's own count: KServe's `rest_client_requests_total`
(controller-runtime's client metrics, every verb, reads included), ours
`tfserving_operator_api_requests` (every request of its transport and of its
child streams, LIST and WATCH included; kopf's ServedModel list and watch are
not in it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks import procstat, throughput, workload
from benchmarks.guard import CLEANUP
from benchmarks.harness import Bench, median, say
from benchmarks.kubeapi import Api
from localdev.support.operator import free_port

KSERVE_VERSION = "v0.20.0"
KSERVE_MODULE = "github.com/kserve/kserve"
MODULE_DIR = Path(__file__).with_name("peer")
CACHE = Path.home() / ".cache" / "tfserving-operator" / "kserve"
BINARY = CACHE / f"manager-{KSERVE_VERSION}"
NAMESPACE = "kserve"
ISVC_PATH = "/apis/serving.kserve.io/v1beta1"
CRDS = (
    "serving.kserve.io_inferenceservices.yaml",
    "serving.kserve.io_servingruntimes.yaml",
    "serving.kserve.io_clusterservingruntimes.yaml",
    "serving.kserve.io_trainedmodels.yaml",
    "serving.kserve.io_inferencegraphs.yaml",
    "clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml",
)
TIMEOUT_SECONDS = 900
_REQUESTS = re.compile(r"^rest_client_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)", re.M)
_OURS = re.compile(
    r"^tfserving_operator_api_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)", re.M
)
_METHOD = re.compile(r'(?:method|verb)="([A-Z]+)"')


def _go(*args: str, timeout: float = 1800) -> str:
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    out = subprocess.run(
        ["go", *args],
        cwd=MODULE_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.stdout.strip()


def build() -> Path:
    """The manager binary, built once per machine (about 3 minutes on 2 cores)."""
    if BINARY.exists():
        return BINARY
    CACHE.mkdir(parents=True, exist_ok=True)
    say(f"building KServe's manager {KSERVE_VERSION} (once per machine)")
    partial = BINARY.with_suffix(".partial")
    started = time.monotonic()
    _go("build", "-trimpath", "-o", str(partial), f"{KSERVE_MODULE}/cmd/manager")
    partial.rename(BINARY)
    say(f"built {BINARY} in {time.monotonic() - started:.0f} s")
    return BINARY


def source_dir() -> Path:
    """KServe's module in the module cache (its CRDs and configuration).

    `go mod download` fetches it first when needed: `go list -m` names an
    empty folder for a module not yet in the cache (a fresh machine's first
    `make bench` failed on it, session 8)."""
    info = json.loads(_go("mod", "download", "-json", KSERVE_MODULE))
    if not info.get("Dir"):
        raise RuntimeError(f"go mod download {KSERVE_MODULE}: no folder ({info.get('Error')})")
    return Path(info["Dir"])


def _kubectl(bench: Bench, *args: str, stdin: str | None = None) -> None:
    cluster = bench.cluster
    done = subprocess.run(
        [str(cluster.kubectl_path()), f"--kubeconfig={cluster.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()[-800:]}")


def _apply(bench: Bench, manifest: dict[str, Any]) -> None:
    """Server-side apply of one object (kubectl reads it from stdin)."""
    _kubectl(
        bench, "apply", "--server-side", "--field-manager=bench", "-f", "-",
        stdin=json.dumps(manifest),
    )  # fmt: skip


def install(bench: Bench) -> None:
    """KServe's CRDs, namespace, ConfigMap and TensorFlow runtime on the instance."""
    src = source_dir()
    for name in CRDS:
        path = src / "config" / "crd" / "full" / name
        # The InferenceService CRD is about 2 MB: too big for a client-side apply.
        _kubectl(bench, "apply", "--server-side", "--field-manager=bench", "-f", str(path))
        bench.cluster.wait_established(path)
    api = bench.api
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}, ok=(409,))
    config = yaml.safe_load((src / "config" / "configmap" / "inferenceservice.yaml").read_text())
    data = config["data"]
    data["deploy"] = json.dumps({"defaultDeploymentMode": "RawDeployment"})
    ingress = json.loads(data["ingress"])
    ingress["disableIstioVirtualHost"] = True
    data["ingress"] = json.dumps(ingress)
    config["metadata"] = {"name": "inferenceservice-config", "namespace": NAMESPACE}
    _apply(bench, config)
    runtime = yaml.safe_load(
        (src / "config" / "runtimes" / "kserve-tensorflow-serving.yaml").read_text()
    )
    for container in runtime["spec"]["containers"]:
        container["image"] = "tensorflow/serving:2.20.0"  # kustomize fills it in upstream
    _apply(bench, runtime)


@dataclass
class Manager:
    """A running KServe manager process."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    tmpdir: Path
    unregister: Any

    @property
    def pid(self) -> int:
        return self.proc.pid

    def requests(self) -> dict[str, int]:
        text = _get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return _by_method(_REQUESTS, text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.unregister()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _by_method(pattern: re.Pattern[str], text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for match in pattern.finditer(text):
        method = _METHOD.search(match["labels"])
        if method:
            out[method[1]] = out.get(method[1], 0) + int(float(match["value"]))
    return out


def _diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def start(bench: Bench, label: str) -> Manager:
    """Start the manager and wait until its health endpoint answers."""
    binary = build()
    tmpdir = Path(tempfile.mkdtemp(prefix="kserve-"))
    certs = tmpdir / "k8s-webhook-server" / "serving-certs"
    certs.mkdir(parents=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(certs / "tls.key"),
            "-out",
            str(certs / "tls.crt"),
        ],
        check=True,
        capture_output=True,
    )
    metrics_port, health_port, webhook_port = free_port(), free_port(), free_port()
    log = bench.cluster.logs / f"kserve-{label}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--kubeconfig={bench.cluster.kubeconfig}",
                f"--metrics-addr=127.0.0.1:{metrics_port}",
                f"--health-probe-addr=127.0.0.1:{health_port}",
                f"--webhook-port={webhook_port}",
                "--leader-elect=false",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": str(tmpdir), "POD_NAMESPACE": NAMESPACE},
            start_new_session=True,
        )
    manager = Manager(proc, metrics_port, tmpdir, lambda: None)
    manager.unregister = CLEANUP.add(f"KServe manager {label}", manager.stop)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"KServe's manager exited ({proc.returncode}); see {log}")
        try:
            if _get(f"http://127.0.0.1:{health_port}/readyz") == "ok":
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        raise TimeoutError(f"KServe's manager not ready after 180 s; see {log}")
    # Its caches sync after readiness: wait until it has asked for its ConfigMap.
    return manager


def inferenceservice(name: str) -> dict[str, Any]:
    """The peer's model: a TensorFlow predictor, zero replicas (no HPA)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"serving.kserve.io/autoscalerClass": "none"}},
        "spec": {
            "predictor": {
                "minReplicas": 0,
                # The model-format form: without the defaulting webhook, the
                # older `tensorflow:` form leaves the container without a name
                # and an image (the Deployment is refused); this one takes
                # both from the TensorFlow ClusterServingRuntime.
                "model": {
                    "modelFormat": {"name": "tensorflow"},
                    "storageUri": "pvc://models/half_plus_three",
                },
            }
        },
    }


class ReadyWatch:
    """Seconds since t0 at which each InferenceService was first seen Ready."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.path = f"{ISVC_PATH}/namespaces/{namespace}/inferenceservices"
        self.api = api
        self.t0 = time.monotonic()
        self.ready: dict[str, float] = {}
        self._changed = threading.Condition()
        _, rv = api.list_rv(self.path)
        self._stream = api.watch(self.path, rv)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self._stream:
            obj = event.get("object") or {}
            conds = (obj.get("status") or {}).get("conditions") or ()
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                with self._changed:
                    self.ready.setdefault(obj["metadata"]["name"], time.monotonic() - self.t0)
                    self._changed.notify_all()

    def wait(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not names <= self.ready.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        self._stream.close()


def kserve_once(bench: Bench, n: int, label: str) -> dict[str, Any]:
    api = bench.api
    namespace = workload.create_namespace(api, prefix="peer")
    manager = start(bench, label)
    sampler = procstat.Sampler(manager.pid).start()
    cpu_before = procstat.read(manager.pid).cpu_seconds
    before = manager.requests()
    watch = ReadyWatch(api, namespace)
    names = [f"m{i:04d}" for i in range(n)]
    path = f"{ISVC_PATH}/namespaces/{namespace}/inferenceservices"
    from concurrent.futures import ThreadPoolExecutor

    watch.t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: api.request("POST", path, inferenceservice(name)), names))
    ok = watch.wait(set(names), TIMEOUT_SECONDS)
    usage = procstat.read(manager.pid)
    requests = _diff(before, manager.requests())
    sampler.stop()
    watch.stop()
    figures = {
        "n": n,
        "ready_seconds": round(max(watch.ready.values()), 2) if ok else None,
        "rss_mib": round(usage.rss_mib, 1),
        "peak_rss_mib": round(max(sampler.peak_rss_mib, usage.hwm_mib), 1),
        "cpu_seconds": round(usage.cpu_seconds - cpu_before, 2),
        "requests": requests,
        "requests_per_model": round(sum(requests.values()) / n, 1),
    }
    say(
        f"KServe N={n}: ready {figures['ready_seconds']} s, RSS {figures['rss_mib']} MiB, "
        f"{figures['requests_per_model']} requests each"
    )
    # While the manager runs: every InferenceService carries its finalizer,
    # which only the manager removes (one at a time).
    figures["delete_seconds"] = round(workload.delete_namespace(api, namespace), 1)
    manager.stop()
    return figures


def ours_once(bench: Bench, n: int, label: str) -> dict[str, Any]:
    """Our operator on the same N, through throughput.run_once (ready = Ready True)."""
    captured: dict[str, Any] = {}
    original = throughput.start_operator

    def spy(*args: Any, **kwargs: Any) -> Any:
        running = original(*args, **kwargs)
        captured["operator"] = running
        captured["before"] = _by_method(_OURS, running.process.metrics_text())
        return running

    throughput.start_operator = spy  # type: ignore[assignment]
    try:
        figures, live = throughput.run_once(bench, n, 0, label, keep=True)
    finally:
        throughput.start_operator = original  # type: ignore[assignment]
    running = captured["operator"]
    requests = _diff(captured["before"], _by_method(_OURS, running.process.metrics_text()))
    running.stop()
    if live is not None:
        workload.delete_namespace(bench.api, live.namespace)
    out = {
        "n": n,
        "ready_seconds": figures.ready_seconds,
        "applied_seconds": figures.applied_seconds,
        "rss_mib": figures.operator_rss_mib,
        "peak_rss_mib": figures.operator_peak_rss_mib,
        "cpu_seconds": figures.operator_cpu_seconds_total,
        "requests": requests,
        "requests_per_model": round(sum(requests.values()) / n, 1),
    }
    say(
        f"ours N={n}: ready {out['ready_seconds']} s, RSS {out['rss_mib']} MiB, "
        f"{out['requests_per_model']} requests each"
    )
    return out


def run(bench: Bench, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Alternating runs (ours, KServe) per size; medians and the ratio of the medians."""
    install(bench)
    runs: list[dict[str, Any]] = []
    for n in sizes:
        for i in range(repeats):
            runs.append({"side": "ours", **ours_once(bench, n, f"peer-ours-{n}-{i + 1}")})
            runs.append({"side": "kserve", **kserve_once(bench, n, f"{n}-{i + 1}")})
    summary = []
    for n in sizes:
        row: dict[str, Any] = {"n": n}
        for side in ("ours", "kserve"):
            of = [r for r in runs if r["n"] == n and r["side"] == side]
            row[f"{side}_ready_seconds"] = median(r["ready_seconds"] or 0 for r in of)
            row[f"{side}_rss_mib"] = median(r["rss_mib"] for r in of)
            row[f"{side}_requests_per_model"] = median(r["requests_per_model"] for r in of)
        if row["kserve_ready_seconds"]:
            row["time_ratio"] = round(row["ours_ready_seconds"] / row["kserve_ready_seconds"], 2)
        summary.append(row)
    return {"kserve_version": KSERVE_VERSION, "summary": summary, "runs": runs}
