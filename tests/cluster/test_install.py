"""Install paths, proven in the local cluster.

The chart is installed with Helm into fresh namespaces that enforce Pod
Security "restricted". No image runs here (the operator pod is a kwok pod), so
the operator runs as a local process through the same entry point, with a
kubeconfig holding a token of the chart's ServiceAccount, never the admin's:
whatever it manages to do, the chart's RBAC allowed; whatever it is refused,
the chart's RBAC forbade.

Two releases share the module:
- cluster-wide (default values; installed with --skip-crds, since the session
  already installed the ServedModel CRD), serving a ServedModel whose model
  sits on a PersistentVolume, in a restricted namespace;
- namespaced + HA (watchNamespaces, ha.enabled; installed with its CRDs, so
  Helm creates kopf's peering CRDs), served by two peered operator processes.

Namespaces here are named ``install-*``: no session's operator (they watch
``tXXXX-*``) ever acts on them, so only the chart's account can do the work.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from localdev.sim.cluster import SimCluster
from localdev.support.k8s import (
    create_sm,
    get_sm,
    patch_sm,
    pods_of,
    servedmodel,
    wait_condition,
)
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "tfserving-operator"
INSTALL_YAML = REPO_ROOT / "manifests" / "install.yaml"
INSTALL_NAMESPACE = "tfserving-operator-system"
SM_CRD = "servedmodels.serving.tfoperator.dev"
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
SUFFIX = uuid.uuid4().hex[:6]
# The cluster-wide operator here only takes ServedModels with this label.
SELECTOR = f"tfso-install={SUFFIX}"


# ----- tools -------------------------------------------------------------------


@dataclass
class Tools:
    """helm and kubectl as the admin."""

    sim: SimCluster

    def run(self, tool: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
        binary = self.sim.state_dir / "bin" / tool
        result = subprocess.run(
            [str(binary), f"--kubeconfig={self.sim.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout + result.stderr if not check else result.stdout

    def helm(self, *args: str, check: bool = True) -> str:
        return self.run("helm", *args, check=check)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.run("kubectl", *args, stdin=stdin, check=check)


@dataclass
class Release:
    """One Helm release of the chart and the namespaces it involves."""

    name: str
    namespace: str
    sets: list[str] = field(default_factory=list)
    watched: list[str] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-tfserving-operator"

    def set_args(self) -> list[str]:
        args = []
        for item in self.sets:
            args += ["--set", item]
        return args


def make_namespace(core: client.CoreV1Api, name: str, labels: dict[str, str]) -> str:
    core.create_namespace({"metadata": {"name": name, "labels": {"tfso-test": "true", **labels}}})
    wait_until(
        lambda: core.list_namespaced_service_account(name).items,
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    return name


def token_kubeconfig(
    api_client: Any, sim: SimCluster, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig whose only credential is a fresh token of `account` (TokenRequest API)."""
    core = client.CoreV1Api(api_client)
    request = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    admin = yaml.safe_load(sim.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    user = f"system:serviceaccount:{namespace}:{account}"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "sim",
                        "cluster": {
                            "server": cluster["server"],
                            "certificate-authority": str(sim.pki.ca_cert),
                        },
                    }
                ],
                "users": [{"name": user, "user": {"token": request.status.token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "sim", "user": user}}],
                "current-context": "sa",
            }
        )
    )
    return path


def can(api: client.AuthorizationV1Api, verb: str, resource: str, namespace: str = "",
        group: str = "", subresource: str = "") -> bool:  # fmt: skip
    """SelfSubjectAccessReview: may this client's identity do it?"""
    review = api.create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": namespace,
                }
            }
        }
    )
    return bool(review.status.allowed)


def refusals(operator: OperatorProcess) -> list[str]:
    """Log lines where the API server refused the operator, or kopf lacked a permission."""
    markers = ("Forbidden", "Not enough permissions", " 403 ")
    return [
        line for line in operator.log_tail(5000).splitlines() if any(m in line for m in markers)
    ]


def forbidden(call: Any, *args: Any, **kwargs: Any) -> bool:
    try:
        call(*args, **kwargs)
    except ApiException as err:
        return err.status == 403
    return False


def names_from_server(tools: Tools, manifests: str) -> set[str]:
    """kind.group/name of every object the API server accepts in a server-side dry run
    (every namespaced object of the chart names its namespace)."""
    out = tools.kubectl("apply", "--dry-run=server", "-o", "name", "-f", "-", stdin=manifests)
    return {line.strip() for line in out.splitlines() if line.strip()}


def render(tools: Tools, release: Release, *extra: str) -> str:
    return tools.helm(
        "template", release.name, str(CHART), "--namespace", release.namespace,
        *release.set_args(), *extra,
    )  # fmt: skip


# ----- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tools(sim: SimCluster) -> Tools:
    return Tools(sim)


@pytest.fixture(scope="module")
def core(api_client: Any) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def cleanup(tools: Tools, core: client.CoreV1Api) -> Iterator[list[Any]]:
    """Things to undo at the end of the module, in reverse order."""
    undo: list[Any] = []
    yield undo
    for action in reversed(undo):
        try:
            action()
        except Exception as err:  # keep cleaning up
            print(f"cleanup: {err}")


@pytest.fixture(scope="module")
def kopf_crds_preexisting(api_client: Any, cleanup: list[Any]) -> Iterator[set[str]]:
    """kopf's peering CRDs that existed before this module; the others are removed
    after everything in `cleanup` (the releases whose peering objects use them)."""
    ext = client.ApiextensionsV1Api(api_client)
    before = {c.metadata.name for c in ext.list_custom_resource_definition().items}
    yield before & set(KOPF_CRDS)
    for name in set(KOPF_CRDS) - before:
        try:
            ext.delete_custom_resource_definition(name)
        except ApiException as err:
            if err.status != 404:
                raise


@pytest.fixture(scope="module")
def clusterwide(tools: Tools, core: client.CoreV1Api, crds: None, cleanup: list[Any]) -> Release:
    """The default chart in a restricted namespace (the ServedModel CRD comes from the session)."""
    ns = make_namespace(core, f"install-{SUFFIX}", RESTRICTED)
    cleanup.append(lambda: core.delete_namespace(ns, propagation_policy="Background"))
    release = Release(f"tfso-cw-{SUFFIX}", ns)
    cleanup.append(lambda: tools.helm("uninstall", release.name, "-n", ns, check=False))
    tools.helm(
        "install", release.name, str(CHART), "-n", ns, "--skip-crds",
        "--wait", "--timeout", "90s",
    )  # fmt: skip
    return release


@pytest.fixture(scope="module")
def clusterwide_token(
    api_client: Any, sim: SimCluster, clusterwide: Release, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("install") / "clusterwide.kubeconfig"
    return token_kubeconfig(api_client, sim, clusterwide.namespace, clusterwide.fullname, path)


@pytest.fixture(scope="module")
def clusterwide_operator(
    sim: SimCluster, clusterwide: Release, clusterwide_token: Path
) -> Iterator[OperatorProcess]:
    """The operator with the cluster-wide release's token, cluster-wide as the chart runs
    it; a label selector keeps it off other sessions' ServedModels."""
    log = sim.state_dir / "logs" / f"operator-{clusterwide.name}.log"
    env = {"TFSO_LABEL_SELECTOR": SELECTOR}
    proc = OperatorProcess(clusterwide_token, "", log, env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def namespaced(
    tools: Tools,
    core: client.CoreV1Api,
    crds: None,
    kopf_crds_preexisting: set[str],
    cleanup: list[Any],
) -> Release:
    """watchNamespaces + HA, installed with the chart's CRDs (kopf's peering CRDs get created)."""
    system = make_namespace(core, f"install-{SUFFIX}-sys", RESTRICTED)
    watched = make_namespace(core, f"install-{SUFFIX}-w", {})
    cleanup.append(lambda: core.delete_namespace(system, propagation_policy="Background"))
    cleanup.append(lambda: core.delete_namespace(watched, propagation_policy="Background"))
    release = Release(
        f"tfso-ns-{SUFFIX}",
        system,
        sets=[f"watchNamespaces={{{watched}}}", "ha.enabled=true"],
        watched=[watched],
    )
    cleanup.append(lambda: tools.helm("uninstall", release.name, "-n", system, check=False))
    tools.helm(
        "install", release.name, str(CHART), "-n", system, *release.set_args(),
        "--wait", "--timeout", "90s",
    )  # fmt: skip
    return release


@pytest.fixture(scope="module")
def other_namespace(core: client.CoreV1Api, cleanup: list[Any]) -> str:
    """A namespace no release watches."""
    ns = make_namespace(core, f"install-{SUFFIX}-other", {})
    cleanup.append(lambda: core.delete_namespace(ns, propagation_policy="Background"))
    return ns


# ----- the chart against the real API server -----------------------------------


def test_chart_renders_what_the_api_server_accepts(
    tools: Tools, clusterwide: Release, namespaced: Release
) -> None:
    """`helm lint`, then `helm template | kubectl apply --dry-run=server` for each shape."""
    assert "0 chart(s) failed" in tools.helm("lint", str(CHART), "--strict")
    shapes = [
        [],
        ["ha.enabled=true", "healthService.enabled=true"],
        [f"watchNamespaces={{{namespaced.watched[0]}}}", "ha.enabled=true"],
    ]
    for sets in shapes:
        release = Release(f"dry-{SUFFIX}", clusterwide.namespace, sets=sets)
        names = names_from_server(tools, render(tools, release))
        assert f"deployment.apps/{release.fullname}" in names, names
        assert f"clusterrole.rbac.authorization.k8s.io/{release.fullname}" in names, names


def test_helm_install_refuses_bad_values(tools: Tools, clusterwide: Release) -> None:
    """The values schema stops a bad install before anything reaches the cluster."""
    name = f"bad-{SUFFIX}"
    out = tools.helm(
        "install", name, str(CHART), "-n", clusterwide.namespace, "--skip-crds",
        "--set", "watchNamespaces=team-a", check=False,
    )  # fmt: skip
    assert "values don't meet the specifications of the schema" in out, out
    assert "/watchNamespaces" in out, out
    releases = tools.helm("list", "-n", clusterwide.namespace, "-a", "-q").split()
    assert name not in releases


def test_install_yaml_gives_the_same_objects_as_the_chart(
    tools: Tools, clusterwide: Release
) -> None:
    """manifests/install.yaml and the chart, both through a server-side dry run."""
    ns = clusterwide.namespace
    # Dry-run into this test's namespace: a dry-run Namespace would not exist for the rest.
    plain = INSTALL_YAML.read_text().replace(INSTALL_NAMESPACE, ns)
    plain_docs = [d for d in yaml.safe_load_all(plain) if d and d["kind"] != "Namespace"]
    from_plain = names_from_server(tools, yaml.safe_dump_all(plain_docs))
    chart = tools.helm(
        "template", "tfserving-operator", str(CHART), "--namespace", ns, "--include-crds",
    )  # fmt: skip
    from_chart = names_from_server(tools, chart)
    assert from_plain == from_chart
    assert f"customresourcedefinition.apiextensions.k8s.io/{SM_CRD}" in from_plain
    assert "deployment.apps/tfserving-operator" in from_plain


# ----- cluster-wide release: enough, not too much, restricted -------------------


def test_operator_pod_passes_restricted(
    tools: Tools, core: client.CoreV1Api, clusterwide: Release, namespaced: Release
) -> None:
    """Both releases' operator pods were admitted in namespaces that enforce "restricted"."""
    for release in (clusterwide, namespaced):
        labels = core.read_namespace(release.namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        selector = f"app.kubernetes.io/instance={release.name}"
        pods = core.list_namespaced_pod(release.namespace, label_selector=selector).items
        expected = 2 if "ha.enabled=true" in release.sets else 1
        assert len(pods) == expected, [p.metadata.name for p in pods]
    # The namespace does enforce: a pod that breaks "restricted" is refused.
    rogue = {
        "metadata": {"name": "rogue"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {
            "privileged": True}}]},
    }  # fmt: skip
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(clusterwide.namespace, rogue, dry_run="All")
    assert refused.value.status == 403 and "restricted" in str(refused.value.body)


def test_servedmodel_ready_with_the_charts_account_in_a_restricted_namespace(
    api_client: Any,
    core: client.CoreV1Api,
    clusterwide: Release,
    clusterwide_operator: OperatorProcess,
    model_store: Path,
    cleanup: list[Any],
) -> None:
    """RBAC is enough: the chart's account reconciles a ServedModel to Ready; its model
    server pod (model on a PersistentVolume; hostPath is not allowed there) is admitted."""
    ns = clusterwide.namespace
    base = make_model_dir(model_store, "install", good=(1,))
    pv_name = f"install-{SUFFIX}-models"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(base), "type": "Directory"},
                "claimRef": {"namespace": ns, "name": "models"},
            },
        }
    )
    cleanup.append(lambda: core.delete_persistent_volume(pv_name))
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    spec = {
        "modelName": "half_plus_three",
        "storage": {"persistentVolumeClaim": {"claimName": "models"}},
        "version": 1,
    }
    manifest = servedmodel("hpt", spec)
    manifest["metadata"]["labels"] = dict([SELECTOR.split("=")])
    create_sm(api_client, ns, manifest)
    body = wait_condition(api_client, ns, "hpt", "Ready", timeout=90)
    assert body["status"]["servingVersions"] == "1"
    (pod,) = pods_of(api_client, ns, "hpt")
    assert pod.spec.security_context.run_as_non_root is True
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=hpt").items
    assert events, "the operator recorded no Event (events create)"
    assert not refusals(clusterwide_operator), clusterwide_operator.log_tail()


def test_clusterwide_token_is_refused_what_it_must_not_do(
    clusterwide: Release, clusterwide_token: Path, other_namespace: str
) -> None:
    """RBAC is not too much: no Secrets anywhere, no pod or RBAC writes, no spec writes."""
    token_client = config.new_client_from_config(config_file=str(clusterwide_token))
    try:
        core = client.CoreV1Api(token_client)
        assert forbidden(core.list_secret_for_all_namespaces)
        assert forbidden(core.list_namespaced_secret, clusterwide.namespace)
        assert forbidden(core.read_namespaced_secret, "anything", other_namespace)
        authz = client.AuthorizationV1Api(token_client)
        # What it needs, anywhere (it is cluster-wide).
        assert can(authz, "watch", "servedmodels", group="serving.tfoperator.dev")
        assert can(authz, "patch", "deployments", other_namespace, group="apps")
        # The canary Deployment goes when its canary is promoted or refused.
        assert can(authz, "delete", "deployments", other_namespace, group="apps")
        assert can(authz, "patch", "pods", other_namespace, subresource="status")
        assert can(authz, "list", "customresourcedefinitions", group="apiextensions.k8s.io")
        refused = [
            ("get", "secrets", "", "", ""),
            ("list", "secrets", other_namespace, "", ""),
            ("create", "pods", other_namespace, "", ""),
            ("delete", "pods", other_namespace, "", ""),
            ("patch", "pods", other_namespace, "", ""),
            ("update", "deployments", other_namespace, "apps", ""),
            ("patch", "servedmodels", other_namespace, "serving.tfoperator.dev", ""),
            ("delete", "servedmodels", other_namespace, "serving.tfoperator.dev", ""),
            ("create", "serviceaccounts", other_namespace, "", "token"),
            ("create", "rolebindings", other_namespace, "rbac.authorization.k8s.io", ""),
            ("list", "namespaces", "", "", ""),  # a cluster-wide kopf does not need it
            ("create", "customresourcedefinitions", "", "apiextensions.k8s.io", ""),
        ]
        allowed = [r for r in refused if can(authz, r[0], r[1], r[2], r[3], r[4])]
        assert not allowed, f"the chart grants more than it should: {allowed}"
    finally:
        token_client.close()


def test_helm_upgrade_changes_a_value(
    tools: Tools, api_client: Any, clusterwide: Release, clusterwide_operator: OperatorProcess
) -> None:
    tools.helm(
        "upgrade", clusterwide.name, str(CHART), "-n", clusterwide.namespace, "--skip-crds",
        "--reuse-values", "--set", "operator.logLevel=DEBUG", "--set", "healthService.enabled=true",
        "--wait", "--timeout", "90s",
    )  # fmt: skip
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment(clusterwide.fullname, clusterwide.namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["TFSO_LOG_LEVEL"] == "DEBUG"
    service = client.CoreV1Api(api_client).read_namespaced_service(
        clusterwide.fullname, clusterwide.namespace
    )
    assert service.spec.ports[0].target_port == "health"
    history = json.loads(
        tools.helm("history", clusterwide.name, "-n", clusterwide.namespace, "-o", "json")
    )
    assert [h["status"] for h in history] == ["superseded", "deployed"]
    notes = tools.helm("get", "notes", clusterwide.name, "-n", clusterwide.namespace)
    assert "kubectl wait sm/mnist" in notes and "manifests/mnist-servedmodel.yaml" in notes


# ----- namespaced + HA release -----------------------------------------------------


def is_active(replica: OperatorProcess) -> bool:
    """A peered replica works when kopf's last word on peering was a resume.

    Peered replicas start paused; kopf logs "Resuming" when it finds no live
    peer of a higher (or equal) priority, and "Pausing" when one appears.
    """
    verdicts = [
        line
        for line in replica.log_tail(2000).splitlines()
        if "Resuming operations after the pause" in line or "Pausing operations" in line
    ]
    return bool(verdicts) and "Resuming" in verdicts[-1]


def test_namespaced_ha_one_replica_works_and_the_other_takes_over(
    api_client: Any,
    sim: SimCluster,
    namespaced: Release,
    kopf_crds_preexisting: set[str],
    model_store: Path,
    tmp_path: Path,
) -> None:
    """Helm installed kopf's peering CRDs; two peered operators with the namespaced
    account: exactly one works; when it stops, the other takes over."""
    ext = client.ApiextensionsV1Api(api_client)
    for name in KOPF_CRDS:
        crd = ext.read_custom_resource_definition(name)  # created from the chart's crds/
        if name not in kopf_crds_preexisting:
            assert crd.metadata.labels["app.kubernetes.io/part-of"] == "tfserving-operator"
    watched = namespaced.watched[0]
    kubeconfig = token_kubeconfig(
        api_client, sim, namespaced.namespace, namespaced.fullname, tmp_path / "ns.kubeconfig"
    )
    logs = sim.state_dir / "logs"
    env = {"TFSO_PEERING": namespaced.fullname}  # as the chart's Deployment sets it
    replicas = [
        OperatorProcess(kubeconfig, watched, logs / f"operator-{namespaced.name}-{i}.log", env)
        for i in range(2)
    ]
    try:
        for replica in replicas:
            replica.start()

        def both_peers() -> dict[str, Any] | None:
            status = peering_status(api_client, watched, namespaced.fullname)
            return status if len(status) == 2 else None

        peers = wait_until(both_peers, timeout=30, what="both replicas in the peering object")
        priorities = {p["priority"] for p in peers.values()}
        assert len(priorities) == 2, f"replicas share a priority (both would pause): {peers}"
        wait_until(
            lambda: [is_active(r) for r in replicas].count(True) == 1,
            timeout=30,
            what="exactly one active replica",
            describe=lambda: "\n".join(r.log_tail(10) for r in replicas),
        )
        base = make_model_dir(model_store, "install-ha", good=(1, 2))
        spec = {"modelName": "half_plus_three", "storage": {"hostPath": {"path": str(base)}},
                "version": 1}  # fmt: skip
        create_sm(api_client, watched, servedmodel("hpt", spec))
        wait_condition(api_client, watched, "hpt", "Ready", timeout=90)

        (active,) = [r for r in replicas if is_active(r)]
        (standby,) = [r for r in replicas if r is not active]
        active.stop()  # a clean exit removes its keep-alive: the standby resumes at once
        wait_until(lambda: is_active(standby), timeout=30, what="the standby to take over")
        patch_sm(api_client, watched, "hpt", {"spec": {"version": 2}})
        body = wait_condition(api_client, watched, "hpt", "Ready", timeout=90)
        assert body["status"]["servingVersions"] == "2"
        for replica in replicas:
            assert not refusals(replica), replica.log_tail()
    finally:
        for replica in replicas:
            replica.stop()


def peering_status(api_client: Any, namespace: str, name: str) -> dict[str, Any]:
    peering = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", name
    )
    return dict(peering.get("status") or {})


def test_namespaced_token_cannot_touch_other_namespaces(
    api_client: Any,
    sim: SimCluster,
    namespaced: Release,
    other_namespace: str,
    tmp_path: Path,
) -> None:
    """RBAC is not too much: outside its watched namespace the account touches nothing."""
    apps_admin = client.AppsV1Api(api_client)
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "not-ours", "namespace": other_namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "not-ours"}},
            "template": {
                "metadata": {"labels": {"app": "not-ours"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    apps_admin.create_namespaced_deployment(other_namespace, foreign)
    kubeconfig = token_kubeconfig(
        api_client, sim, namespaced.namespace, namespaced.fullname, tmp_path / "ns.kubeconfig"
    )
    token_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        apps = client.AppsV1Api(token_client)
        core = client.CoreV1Api(token_client)
        patch = {"metadata": {"labels": {"touched": "yes"}}}
        assert forbidden(apps.patch_namespaced_deployment, "not-ours", other_namespace, patch)
        assert forbidden(apps.delete_namespaced_deployment, "not-ours", other_namespace)
        assert forbidden(apps.list_namespaced_deployment, other_namespace)
        assert forbidden(apps.list_deployment_for_all_namespaces)
        assert forbidden(core.list_pod_for_all_namespaces)
        assert forbidden(core.list_secret_for_all_namespaces)
        assert forbidden(core.list_namespaced_secret, namespaced.watched[0])
        authz = client.AuthorizationV1Api(token_client)
        watched = namespaced.watched[0]
        assert can(authz, "patch", "deployments", watched, group="apps")
        assert can(authz, "patch", "pods", watched, subresource="status")
        assert can(authz, "list", "namespaces")  # kopf follows its namespaces
        for ns in (other_namespace, namespaced.namespace):
            assert not can(authz, "patch", "deployments", ns, group="apps")
            assert not can(authz, "patch", "pods", ns, subresource="status")
            assert not can(authz, "create", "configmaps", ns)
            assert not can(authz, "patch", "servedmodels", ns, "serving.tfoperator.dev", "status")
            assert not can(authz, "patch", "kopfpeerings", ns, group="kopf.dev")
        assert not can(authz, "watch", "servedmodels", group="serving.tfoperator.dev")
        labels = apps_admin.read_namespaced_deployment("not-ours", other_namespace).metadata.labels
        assert "touched" not in (labels or {})
    finally:
        token_client.close()


# ----- uninstall (last: it removes the cluster-wide release) ---------------------------


def test_helm_uninstall_keeps_crds_and_servedmodels(
    tools: Tools,
    api_client: Any,
    clusterwide: Release,
    clusterwide_operator: OperatorProcess,
) -> None:
    ns = clusterwide.namespace
    assert get_sm(api_client, ns, "hpt"), "needs the ServedModel of the reconcile test"
    clusterwide_operator.stop()  # its RBAC goes away with the release
    tools.helm("uninstall", clusterwide.name, "-n", ns, "--wait", "--timeout", "60s")
    rbac = client.RbacAuthorizationV1Api(api_client)
    with pytest.raises(ApiException) as gone:
        rbac.read_cluster_role(clusterwide.fullname)
    assert gone.value.status == 404
    with pytest.raises(ApiException) as gone:
        client.AppsV1Api(api_client).read_namespaced_deployment(clusterwide.fullname, ns)
    assert gone.value.status == 404
    # Helm never deletes what it installed from crds/, nor the ServedModels (not its objects).
    client.ApiextensionsV1Api(api_client).read_custom_resource_definition(SM_CRD)
    body = get_sm(api_client, ns, "hpt")
    assert body["metadata"].get("deletionTimestamp") is None
    # The model servers keep serving; they are just not reconciled any more.
    assert client.AppsV1Api(api_client).read_namespaced_deployment("hpt", ns)
