"""The local Kubernetes cluster: real control plane processes, kwok nodes.

Usable three ways: as a library (``SimCluster(...).up()``), as pytest fixtures
(``tests/conftest.py``), and as ``make sim-up`` / ``make sim-down``
(``python -m localdev.sim up|down|status``).

Processes are started detached (their own session) and recorded in
``.sim/pids/``, so ``up`` is idempotent across invocations: a second ``up``
finds the healthy cluster and returns; a component found dead is reported
with the tail of its log and the cluster is restarted cleanly.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from localdev.sim import toolchain
from localdev.sim.nodes import SIM_NODES, SimNode, node_manifest, node_status_patch
from localdev.sim.pki import FRONT_PROXY_CA, FRONT_PROXY_CLIENT, Pki, ensure_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
# kwok's emulated resource usage and kubelet /metrics/resource, for metrics-server.
KWOK_METRICS_FILE = Path(__file__).with_name("kwok-metrics.yaml")
# The HPA controller's loop (default 15 s), shorter here so autoscaling tests
# and the demo see a decision within seconds; docs/autoscaling.md gives both.
HPA_SYNC_PERIOD = "5s"
# metrics-server scrapes every node this often (its minimum is 10 s).
METRIC_RESOLUTION = "10s"
# With the stand-in running, it plays the kubelet for model-server pods once
# kwok's create stage gave them an IP (localdev/standin/kubelet.py): these
# stages must then leave such pods alone.
KUBELET_OWNED_STAGES = ("sim-pod-start", "sim-pod-readiness", "sim-pod-delete")
MODEL_SERVER_LABEL = "serving.tfoperator.dev/servedmodel"


@dataclass(frozen=True)
class Ports:
    """Where one cluster instance listens. Instance 0 is the one `make sim-up`
    starts; other instances (fault tests that restart the API server or etcd,
    benchmarks) get ports 100*k higher and their own pod range, so they never
    disturb instance 0."""

    instance: int = 0

    @property
    def slot(self) -> int:
        """The instance plus TFSO_SIM_INSTANCE_OFFSET: several clones on one
        machine (each with its own .sim) run their clusters side by side when
        each sets its own offset (10, 20, ...)."""
        return self.instance + int(os.environ.get("TFSO_SIM_INSTANCE_OFFSET", "0") or 0)

    def _port(self, base: int) -> int:
        return base + 100 * self.slot

    @property
    def etcd_client(self) -> int:
        return self._port(23790)

    @property
    def etcd_peer(self) -> int:
        return self._port(23800)

    @property
    def apiserver(self) -> int:
        return self._port(16443)

    @property
    def controller_manager(self) -> int:
        return self._port(20257)

    @property
    def scheduler(self) -> int:
        return self._port(20259)

    @property
    def kwok(self) -> int:
        return self._port(20250)

    @property
    def s3(self) -> int:
        return self._port(29000)

    @property
    def metrics_server(self) -> int:
        return self._port(20263)

    @property
    def pod_cidr(self) -> str:
        return f"127.{1 + self.slot}.0.0/16"


# Pod IPs come from a loopback range (Ports.pod_cidr) so this machine can
# dial (and the stand-in model server can bind) every pod's address.
SERVICE_CIDR = "10.96.0.0/16"
# Start order; `down` stops them in reverse.
COMPONENT_NAMES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "s3",
    "metrics-server",
    "standin",
    "operator",  # only when `make demo` left one running
)
# The local S3 store's credentials: random per cluster, in a file only its
# owner reads; tests and demos give them to ServedModels through a Secret.
S3_CREDENTIALS_FILE = "s3-credentials.json"


def render_stages(exclude_model_servers: bool) -> str:
    """kwok's Stages: the file as written, or with the stages the stand-in's
    kubelet takes over limited to pods without the model-server label."""
    text = STAGES_FILE.read_text()
    if not exclude_model_servers:
        return text
    stages = [s for s in yaml.safe_load_all(text) if s]
    for stage in stages:
        if stage["metadata"]["name"] in KUBELET_OWNED_STAGES:
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": f'.metadata.labels["{MODEL_SERVER_LABEL}"]', "operator": "DoesNotExist"}
            )
    header = "# Rendered from localdev/sim/kwok-stages.yaml by SimCluster (with the stand-in).\n"
    return header + yaml.safe_dump_all(stages, sort_keys=False)


class SimError(RuntimeError):
    """The local cluster could not be started or is unhealthy."""


@dataclass
class Component:
    """One process of the cluster."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    """Progress for a person watching `make sim-up`."""
    print(f"[sim] {message}", file=sys.stderr, flush=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    """Poll `check` until it is true; raise SimError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SimError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class SimCluster:
    """A local control plane rooted at ``state_dir`` (default: ``<repo>/.sim``)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        with_standin: bool = True,
        instance: int = 0,
        nodes: tuple[SimNode, ...] = SIM_NODES,
    ) -> None:
        default_dir = (
            REPO_ROOT / ".sim" if instance == 0 else REPO_ROOT / ".sim" / f"instance-{instance}"
        )
        self.state_dir = (state_dir or default_dir).resolve()
        self.ports = Ports(instance)
        self.nodes = nodes
        self.with_standin = with_standin
        self.pki = Pki(self.state_dir / "pki")
        self.logs = self.state_dir / "logs"
        self.pids = self.state_dir / "pids"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.stages_file = self.state_dir / "kwok-stages.yaml"
        self.server = f"https://127.0.0.1:{self.ports.apiserver}"
        self._bin: Path | None = None

    # ----- paths and binaries -------------------------------------------------

    @property
    def bin(self) -> Path:
        """The cache folder with the built binaries (built on first use)."""
        if self._bin is None:
            self._bin = toolchain.ensure_binaries()
        return self._bin

    def kubectl_path(self) -> Path:
        return self.state_dir / "bin" / "kubectl"

    def link_user_binaries(self) -> None:
        """Link kubectl and helm into .sim/bin so `PATH=$PWD/.sim/bin:$PATH` works."""
        user_bin = self.state_dir / "bin"
        user_bin.mkdir(parents=True, exist_ok=True)
        for name in ("kubectl", "helm", "kwok", "etcd", "kube-apiserver"):
            link = user_bin / name
            if link.is_symlink() and os.readlink(link) == str(self.bin / name):
                continue
            tmp = user_bin / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.bin / name)
            os.replace(tmp, link)

    # ----- kubeconfigs --------------------------------------------------------

    def _write_kubeconfig(self, path: Path, user: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sim",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.pki.cert(user)),
                        "client-key": str(self.pki.key(user)),
                    },
                }
            ],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": user}}],
            "current-context": "sim",
        }
        # Write-then-rename: a concurrent reader never sees a half-written file.
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, path)

    def component_kubeconfig(self, user: str) -> Path:
        return self.state_dir / f"{user}.kubeconfig"

    # ----- components ---------------------------------------------------------

    def components(self) -> list[Component]:
        """Every process of the cluster, in start order, with its flags."""
        b, p, s, ports = self.bin, self.pki, self.state_dir, self.ports
        ca = str(p.ca_cert)
        comps = [
            Component(
                "etcd",
                [
                    str(b / "etcd"),
                    "--name=sim",
                    f"--data-dir={s / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
                    f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
                    f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
                    f"--initial-cluster=sim=http://127.0.0.1:{ports.etcd_peer}",
                    "--listen-metrics-urls=",
                    "--log-level=warn",
                    "--quota-backend-bytes=4294967296",
                    # fsync is for disks that must survive power loss; this
                    # cluster is disposable and its speed is what tests feel.
                    "--unsafe-no-fsync=true",
                ],
            ),
            Component(
                "kube-apiserver",
                [
                    str(b / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={ports.apiserver}",
                    f"--tls-cert-file={p.cert('apiserver')}",
                    f"--tls-private-key-file={p.key('apiserver')}",
                    f"--client-ca-file={ca}",
                    "--authorization-mode=RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={p.sa_pub}",
                    f"--service-account-signing-key-file={p.sa_key}",
                    # The apiserver would publish 127.0.0.1 as the kubernetes
                    # Service's endpoint, which endpoint validation rejects.
                    "--endpoint-reconciler-type=none",
                    # The aggregation layer, for metrics.k8s.io (metrics-server):
                    # the API server proxies with this client cert and passes the
                    # user in these headers, which the front-proxy CA vouches for.
                    f"--requestheader-client-ca-file={p.cert(FRONT_PROXY_CA)}",
                    f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={p.cert(FRONT_PROXY_CLIENT)}",
                    f"--proxy-client-key-file={p.key(FRONT_PROXY_CLIENT)}",
                    "--profiling=false",
                    "--v=1",
                ],
            ),
            Component(
                "kube-controller-manager",
                [
                    str(b / "kube-controller-manager"),
                    f"--kubeconfig={self.component_kubeconfig('controller-manager')}",
                    f"--authentication-kubeconfig={self.component_kubeconfig('controller-manager')}",
                    f"--authorization-kubeconfig={self.component_kubeconfig('controller-manager')}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={ports.controller_manager}",
                    f"--service-account-private-key-file={p.sa_key}",
                    f"--root-ca-file={ca}",
                    "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={ca}",
                    f"--cluster-signing-key-file={p.ca_key}",
                    "--leader-elect=false",
                    "--controllers=*",
                    # Many small objects come and go in tests: sync quickly.
                    "--concurrent-deployment-syncs=10",
                    "--concurrent-replicaset-syncs=10",
                    "--concurrent-gc-syncs=30",
                    # The default 20 requests/s throttles Deployment rollouts
                    # of hundreds of ServedModels in the benchmarks.
                    f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
                    "--kube-api-qps=200",
                    "--kube-api-burst=400",
                    "--v=1",
                ],
            ),
            Component(
                "kube-scheduler",
                [
                    str(b / "kube-scheduler"),
                    f"--kubeconfig={self.component_kubeconfig('scheduler')}",
                    f"--authentication-kubeconfig={self.component_kubeconfig('scheduler')}",
                    f"--authorization-kubeconfig={self.component_kubeconfig('scheduler')}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={ports.scheduler}",
                    "--leader-elect=false",
                    "--v=1",
                ],
            ),
            Component(
                "kwok",
                [
                    str(b / "kwok"),
                    f"--kubeconfig={self.component_kubeconfig('kwok')}",
                    "--manage-all-nodes=false",
                    "--manage-nodes-with-label-selector=type=kwok",
                    f"--cidr={ports.pod_cidr}",
                    "--node-ip=127.0.0.1",
                    "--node-lease-duration-seconds=40",
                    f"--server-address=127.0.0.1:{ports.kwok}",
                    f"--config={self.stages_file}",
                    f"--config={KWOK_METRICS_FILE}",
                ],
            ),
            Component(
                "metrics-server",
                [
                    str(b / "metrics-server"),
                    f"--kubeconfig={self.component_kubeconfig('metrics-server')}",
                    f"--authentication-kubeconfig={self.component_kubeconfig('metrics-server')}",
                    f"--authorization-kubeconfig={self.component_kubeconfig('metrics-server')}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={ports.metrics_server}",
                    f"--cert-dir={s / 'metrics-server'}",
                    # kwok serves every node's kubelet endpoints on one plain-HTTP
                    # port, each node's metrics under its own path (the node's
                    # metrics.k8s.io/resource-metrics-path annotation).
                    f"--kubelet-port={ports.kwok}",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--deprecated-kubelet-completely-insecure",
                    f"--metric-resolution={METRIC_RESOLUTION}",
                    # Must be below the resolution (its default, 10 s, is not).
                    "--kubelet-request-timeout=5s",
                    "--v=1",
                ],
            ),
        ]
        comps.append(self._s3_component())
        if self.with_standin:
            comps.append(
                Component(
                    "standin",
                    [
                        sys.executable,
                        "-m",
                        "localdev.standin",
                        f"--kubeconfig={self.kubeconfig}",
                        # Init containers (the model puller) run on this
                        # machine for real, with the binary their image holds.
                        f"--empty-dir-root={self.state_dir / 'pods'}",
                        f"--binary=rclone={b / 'rclone'}",
                    ],
                    env={"PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
                )
            )
        return comps

    # ----- the S3 store -------------------------------------------------------

    @property
    def s3_endpoint(self) -> str:
        """The local S3 store's URL (`rclone serve s3`, path-style buckets)."""
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def s3_root(self) -> Path:
        """The folder the store keeps its buckets in (one folder per bucket)."""
        return self.state_dir / "s3"

    def s3_credentials(self) -> dict[str, str]:
        """The store's access key pair, made on first use."""
        path = self.state_dir / S3_CREDENTIALS_FILE
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            keys = {
                "AWS_ACCESS_KEY_ID": "SIM" + secrets.token_hex(8).upper(),
                "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
            }
            tmp = path.with_name(path.name + ".tmp")
            tmp.touch(mode=0o600)
            tmp.write_text(json.dumps(keys))
            os.replace(tmp, path)
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded

    def s3_secret_data(self) -> dict[str, str]:
        """The keys of a credentials Secret for this store (puller.SECRET_KEYS)."""
        return {
            **self.s3_credentials(),
            "S3_ENDPOINT": self.s3_endpoint,
            # rclone's own S3 server: path-style addressing, as for MinIO.
            "S3_PROVIDER": "Rclone",
        }

    def s3_rclone_env(self, remote: str = "store") -> dict[str, str]:
        """Environment for an rclone on this machine to reach the store as `remote`."""
        prefix = f"RCLONE_CONFIG_{remote.upper()}_"
        options = {
            "TYPE": "s3",
            "PROVIDER": "Rclone",
            "ENDPOINT": self.s3_endpoint,
            "ACCESS_KEY_ID": self.s3_credentials()["AWS_ACCESS_KEY_ID"],
            "SECRET_ACCESS_KEY": self.s3_credentials()["AWS_SECRET_ACCESS_KEY"],
        }
        return {"RCLONE_CONFIG": "/dev/null", **{prefix + k: v for k, v in options.items()}}

    def _s3_component(self) -> Component:
        keys = self.s3_credentials()
        return Component(
            "s3",
            [
                str(self.bin / "rclone"),
                "serve",
                "s3",
                f"--addr=127.0.0.1:{self.ports.s3}",
                # Objects go in through this server's S3 API (never straight
                # into the folder), so its directory cache is always current.
                # (--dir-cache-time=0s hangs uploads to new prefixes at v1.76.0.)
                "--config=/dev/null",
                str(self.s3_root),
            ],
            # The key pair through rclone's environment, not its command line
            # (which `ps` shows to every user). rclone reads a list flag's
            # variable as CSV: the quotes keep "key,secret" one entry.
            env={
                "RCLONE_AUTH_KEY": f'"{keys["AWS_ACCESS_KEY_ID"]},{keys["AWS_SECRET_ACCESS_KEY"]}"'
            },
        )

    def _s3_listening(self) -> bool:
        self._check_alive(["s3"])
        with socket.create_connection(("127.0.0.1", self.ports.s3), timeout=1):
            return True

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.pids / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _alive(pid: int | None) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie (exited, not yet reaped) is not alive.
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(") ", 1)[1][:1] != "Z"
        except OSError:
            return False

    def dead_components(self) -> list[str]:
        """Names of recorded components whose process is gone."""
        return [
            n for n in COMPONENT_NAMES if self._pid(n) is not None and not self._alive(self._pid(n))
        ]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _start(self, comp: Component) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{comp.name}.log", "ab") as out:
            proc = subprocess.Popen(
                comp.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env={**os.environ, **comp.env},
                start_new_session=True,
            )
        (self.pids / f"{comp.name}.pid").write_text(str(proc.pid))

    def _ensure_started(self, comp: Component) -> None:
        if not self._alive(self._pid(comp.name)):
            self._start(comp)

    # ----- health -------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.cert("admin")), str(self.pki.key("admin")))
        return ctx

    def api_get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET a path from the API server as the admin (no client library needed)."""
        with urllib.request.urlopen(
            self.server + path, context=self._ssl_context(), timeout=timeout
        ) as resp:
            body: bytes = resp.read()
            return body

    def healthy(self) -> bool:
        """True when the API server answers /readyz."""
        try:
            return self.api_get("/readyz", timeout=2) == b"ok"
        except (OSError, urllib.error.URLError):
            return False

    def _check_alive(self, names: Iterable[str]) -> None:
        for name in names:
            if not self._alive(self._pid(name)):
                raise SimError(
                    f"{name} exited during start-up; its log ends:\n{self.log_tail(name)}"
                )

    # ----- up / down ----------------------------------------------------------

    def up(self) -> SimCluster:
        """Start every component that is not running; create the nodes. Idempotent."""
        started = time.monotonic()
        bin_dir = self.bin
        self.state_dir.mkdir(parents=True, exist_ok=True)
        dead = self.dead_components()
        if dead and self.healthy():
            for name in dead:
                log(f"{name} had died; its log ends:\n{self.log_tail(name)}")
        ensure_pki(self.pki.root)
        self._write_kubeconfig(self.kubeconfig, "admin")
        for user in ("controller-manager", "scheduler", "kwok", "metrics-server"):
            self._write_kubeconfig(self.component_kubeconfig(user), user)
        self.link_user_binaries()
        self._write_stages()
        comps = {c.name: c for c in self.components()}
        self._ensure_started(comps["etcd"])
        self._ensure_started(comps["kube-apiserver"])
        wait_for("kube-apiserver /readyz", self._ready_or_raise, timeout=90)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok", "metrics-server"):
            self._ensure_started(comps[name])
        self._register_metrics_api()
        self._create_nodes()
        wait_for("the simulated nodes to be Ready", self._nodes_ready, timeout=60)
        wait_for(
            "the default ServiceAccount (controller manager running)",
            lambda: bool(self.api_get("/api/v1/namespaces/default/serviceaccounts/default")),
            timeout=60,
        )
        self.s3_root.mkdir(parents=True, exist_ok=True)
        self._ensure_started(comps["s3"])
        wait_for("the S3 store (rclone serve s3) to listen", self._s3_listening, timeout=30)
        if "standin" in comps:
            self._ensure_started(comps["standin"])
        self._check_alive(comps)
        log(f"cluster up in {time.monotonic() - started:.1f} s (binaries: {bin_dir})")
        log(f"kubeconfig: {self.kubeconfig}")
        return self

    def _register_metrics_api(self) -> None:
        """Serve metrics.k8s.io through the aggregation layer from our metrics-server.

        The APIService names a Service; with no kube-proxy here, an ExternalName
        Service (localhost) is what the API server's resolver can dial: it
        proxies to https://localhost:<port>. metrics-server's certificate is
        self-signed, hence insecureSkipTLSVerify (local cluster only).
        """
        port = self.ports.metrics_server
        objects = [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "metrics-server", "namespace": "kube-system"},
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                },
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"name": "metrics-server", "namespace": "kube-system", "port": port},
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ]
        listing = {"apiVersion": "v1", "kind": "List", "items": objects}
        self._kubectl(
            "apply", "--server-side", "--field-manager=sim", "-f", "-", stdin=json.dumps(listing)
        )
        wait_for("the metrics.k8s.io APIService to be Available", self._metrics_api_available, 90)

    def _metrics_api_available(self) -> bool:
        self._check_alive(["metrics-server"])
        body = json.loads(
            self.api_get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io")
        )
        conditions = body.get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def _write_stages(self) -> None:
        """kwok's Stages for this cluster (see ``render_stages``); a running kwok
        keeps the ones it started with."""
        tmp = self.stages_file.with_name(self.stages_file.name + ".tmp")
        tmp.write_text(render_stages(exclude_model_servers=self.with_standin))
        os.replace(tmp, self.stages_file)

    def _ready_or_raise(self) -> bool:
        self._check_alive(["etcd", "kube-apiserver"])
        return self.healthy()

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise SimError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def install_crds(self) -> None:
        """Apply every CRD in crds/ and wait until the API server serves them."""
        crd_dir = REPO_ROOT / "crds"
        self._kubectl("apply", "--server-side", "--field-manager=sim", "-f", str(crd_dir))
        self.wait_established(crd_dir)

    def wait_established(self, path: Path, timeout: float = 60) -> None:
        """Wait until every CRD in `path` (a file or a folder of them) is Established.

        Not `kubectl wait --for=condition=Established`: on a CRD whose status has
        no conditions yet, it fails ("status.conditions accessor error") instead
        of waiting.
        """
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        names = [
            doc["metadata"]["name"]
            for file in files
            for doc in yaml.safe_load_all(file.read_text())
            if doc and doc.get("kind") == "CustomResourceDefinition"
        ]
        for name in names:
            wait_for(f"CRD {name} Established", lambda n=name: self._crd_established(n), timeout)

    def _crd_established(self, name: str) -> bool:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        crd = json.loads(self.api_get(path))
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    def _create_nodes(self) -> None:
        manifests = [node_manifest(n) for n in self.nodes]
        node_list = {"apiVersion": "v1", "kind": "List", "items": manifests}
        self._kubectl(
            "apply", "--server-side", "--field-manager=sim", "-f", "-", stdin=json.dumps(node_list)
        )
        for node in self.nodes:
            # Capacity lives in the status subresource, which a create ignores.
            self._kubectl("patch", "node", node.name, "--subresource=status", "--type=merge",
                          "-p", json.dumps(node_status_patch(node)))  # fmt: skip

    def _nodes_ready(self) -> bool:
        self._check_alive(["kwok"])
        nodes = json.loads(self.api_get("/api/v1/nodes?labelSelector=type%3Dkwok"))["items"]
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
            and n.get("status", {}).get("allocatable", {}).get("pods")
        ]
        return len(ready) == len(self.nodes)

    def down(self) -> None:
        """Stop every component and wait until each is gone. Keeps .sim/pki and logs."""
        for name in reversed(COMPONENT_NAMES):
            pid = self._pid(name)
            if self._alive(pid):
                assert pid is not None
                terminate_group(pid)
            (self.pids / f"{name}.pid").unlink(missing_ok=True)
        # etcd's data goes too: the next `up` starts from an empty cluster.
        subprocess.run(["rm", "-rf", str(self.state_dir / "etcd")], check=True)

    def status(self) -> dict[str, str]:
        """Each component's state, for `python -m localdev.sim status`."""
        return {
            n: ("running" if self._alive(self._pid(n)) else "stopped")
            for n in COMPONENT_NAMES
            if n != "operator" or self._pid(n) is not None
        }


def terminate_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` s."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not SimCluster._alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(f"process {pid} to exit after SIGKILL", lambda: not SimCluster._alive(pid), 10)
