"""Gated version rollouts against the local cluster (issue 4, "Done when").

Every ServedModel here serves copies of half_plus_three; the version number
is the only difference, so a Predict answer names the version that served
it. The stand-in model server's load-delay annotation opens a window in which
a version is LOADING, long enough to look at the pod and ask its server.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from kubernetes import client

from localdev.support.clients import (
    PodInfo,
    PodWatcher,
    hung_grpc_server,
    model_status,
    predict,
    predict_load,
)
from localdev.support.k8s import (
    condition,
    create_sm,
    get_sm,
    patch_sm,
    servedmodel,
    wait_sm,
)
from localdev.support.models import make_model_dir
from localdev.support.operator import OperatorProcess
from localdev.support.waiting import wait_until
from tfserving_operator import api

MODEL = "half_plus_three"
LOAD_DELAY = "standin.tests.tfoperator.dev/load-delay-seconds"

Body = dict[str, Any]


def hpt_spec(base: Path, version: int, **extra: Any) -> Body:
    """A ServedModel spec for half_plus_three copies under `base`."""
    return {
        "modelName": MODEL,
        "storage": {"hostPath": {"path": str(base)}},
        "version": version,
        **extra,
    }


def status_of(body: Body) -> Body:
    return dict(body.get("status") or {})


def current(body: Body) -> bool:
    """The status describes the latest generation."""
    return status_of(body).get("observedGeneration") == body["metadata"].get("generation")


def wait_serving(
    api_client: Any, namespace: str, name: str, versions: str, timeout: float = 60
) -> Body:
    """Wait for Ready True serving exactly `versions`, with the rollout finished."""

    def done(body: Body) -> bool:
        st = status_of(body)
        return (
            current(body)
            and condition(body, "Ready").get("status") == "True"
            and condition(body, "Progressing").get("status") == "False"
            and st.get("servingVersions") == versions
            and not st.get("rollout")
        )

    return wait_sm(api_client, namespace, name, f"Ready, serving {versions}", done, timeout)


def wait_refused(
    api_client: Any, namespace: str, name: str, reason: str, timeout: float = 60
) -> Body:
    """Wait for Degraded True with `reason` and the rollback finished."""

    def refused(body: Body) -> bool:
        st = status_of(body)
        return (
            current(body)
            and condition(body, "Degraded").get("status") == "True"
            and condition(body, "Degraded").get("reason") == reason
            and (st.get("refused") or {}).get("reason") == reason
            and not st.get("rollout")
        )

    return wait_sm(api_client, namespace, name, f"refused ({reason})", refused, timeout)


def events_of(api_client: Any, namespace: str, name: str) -> list[Any]:
    core = client.CoreV1Api(api_client)
    selector = f"involvedObject.name={name},involvedObject.kind={api.KIND}"
    return list(core.list_namespaced_event(namespace, field_selector=selector).items)


def state_of(target: str, version: int) -> str:
    """The state `version` has on the server at `target` ("" if the server does not list it)."""
    for status in model_status(target, MODEL):
        if status.version == version:
            return status.state
    return ""


def staying(pods: dict[str, PodInfo]) -> list[str]:
    """Names of the pods not terminating. A deleted model-server pod stays
    Terminating through its preStop sleep and grace period (the local
    cluster's kubelet honours them, as a real one does), so "scaled away"
    means terminating, not gone."""
    return [name for name, info in pods.items() if not info.terminating]


def new_pod(pods: PodWatcher, versions: str, timeout: float = 30) -> PodInfo:
    """Wait for a Running pod started for `versions`; return it."""

    def found(current: dict[str, PodInfo]) -> bool:
        return any(
            p.versions == versions and p.ip and p.phase == "Running" and not p.terminating
            for p in current.values()
        )

    assert pods.wait(found, timeout), f"no Running pod for versions {versions}: {pods.pods()}"
    return next(
        p
        for p in pods.pods().values()
        if p.versions == versions and p.ip and p.phase == "Running" and not p.terminating
    )


# ----------------------------------------------------------------------------


def test_gate_holds_pod_out_of_traffic_until_every_version_available(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """1 -> {1, 2}: the new pod's server opens its ports once one version of the
    model is AVAILABLE (server_core.cc waits for the first to finish), here 2,
    while 1 is still LOADING; the pod is not Ready until its server says 1 is
    AVAILABLE too."""
    base = make_model_dir(model_store, "gate", good=(1, 2))
    spec = hpt_spec(base, 1, podAnnotations={LOAD_DELAY: "1=6"})
    create_sm(api_client, namespace, servedmodel("gate", spec))
    wait_serving(api_client, namespace, "gate", "1")

    with PodWatcher(api_client, namespace, "gate") as pods:
        (old,) = pods.serving()
        both = {"version": None, "versionPolicy": {"specific": {"versions": [1, 2]}}}
        patch_sm(api_client, namespace, "gate", {"spec": both})
        pod = new_pod(pods, "1,2")

        gate_reasons = set()
        last_loading_query = 0.0
        deadline = time.monotonic() + 40
        while True:
            assert time.monotonic() < deadline, "version 1 never became AVAILABLE"
            # The pod first, then its server: a pod seen Ready before the server
            # said LOADING was Ready while LOADING.
            seen = pods.pods()[pod.name]
            asked_at = time.monotonic()
            try:
                state = state_of(pod.target, 1)
            except grpc.RpcError:
                state = ""  # ports still closed: the initial load is not done
            if state == "AVAILABLE":
                break
            assert state in ("", "START", "LOADING"), f"version 1 is {state}"
            if state == "LOADING":
                last_loading_query = asked_at
            assert not seen.ready, f"{pod.name} Ready while its server says 1 is {state!r}"
            if seen.gate == "False":
                gate_reasons.add(seen.gate_reason)
            # The old pod keeps serving all along (maxUnavailable 0).
            assert pods.pods()[old.name].serving, "the v1 pod stopped serving"
            time.sleep(0.05)
        assert "VersionLoading" in gate_reasons, f"gate reasons while loading: {gate_reasons}"
        assert last_loading_query > 0, "version 1 was never seen LOADING: no window observed"

        assert pods.wait(lambda p: p.get(pod.name, pod).ready, 15), "new pod never turned Ready"
        assert pods.ready_at[pod.name] > last_loading_query

    body = wait_serving(api_client, namespace, "gate", "1,2")
    st = status_of(body)
    assert st["targetVersions"] == "1,2"
    assert st["readyReplicas"] == 1
    assert st["lastGood"]["versions"] == [1, 2]
    assert not st.get("refused")
    (entry,) = st["pods"]
    assert entry["ready"] is True
    assert sorted(v["version"] for v in entry["versions"] if v["state"] == "AVAILABLE") == [1, 2]
    reasons = [e.reason for e in events_of(api_client, namespace, "gate")]
    assert "RolloutStarted" in reasons
    assert "ServingVersions" in reasons


def test_broken_v3_refused_while_v2_keeps_serving(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """A version that fails to load on a new pod crash-loops its server (the real
    server exits -1 when its first version ends in END); the operator refuses it
    with the server's own last words, the spec keeps saying 3 until the user
    changes it, and the retry annotation tries it again."""
    base = make_model_dir(model_store, "broken", good=(2,), broken=(3,))
    spec = hpt_spec(base, 2, rollout={"loadRetries": 0, "loadRetryIntervalSeconds": 1})
    create_sm(api_client, namespace, servedmodel("broken", spec))
    wait_serving(api_client, namespace, "broken", "2")

    with PodWatcher(api_client, namespace, "broken") as pods:
        (old,) = pods.serving()
        patch_sm(api_client, namespace, "broken", {"spec": {"version": 3}})
        pod = new_pod(pods, "3")

        # The server's own words: its last log lines, kept by the kubelet as the
        # container's termination message (FallbackToLogsOnError). Read from
        # the watch's history: the refusal can delete the pod within a fraction
        # of a second of the exit, before a GET would see it.
        def exited() -> PodInfo | None:
            seen = [i for _, i in pods.history if i.name == pod.name and i.exit_code is not None]
            return seen[0] if seen else None

        assert pods.wait(lambda _: exited() is not None, 30), "the v3 pod's server never exited"
        terminated = exited()
        assert terminated is not None
        assert terminated.exit_code == 255, terminated
        assert "Failed to start server" in terminated.exit_message, terminated
        assert "version: 3" in terminated.exit_message, terminated
        body = wait_refused(api_client, namespace, "broken", "VersionLoadFailed")
        assert pods.wait(lambda p: staying(p) == [old.name], 60), pods.pods()
        never_left = all(info.serving for _, info in pods.history if info.name == old.name)
        assert never_left, "the v2 pod stopped serving during the refused rollout"
        assert not any(info.ready for _, info in pods.history if info.name == pod.name)
    error = terminated.exit_message.strip().splitlines()[-1]

    st = status_of(body)
    assert body["spec"]["version"] == 3, "the spec was rewritten"
    assert st["targetVersions"] == "3"
    assert st["servingVersions"] == "2"
    assert st["refused"]["versions"] == [3]
    assert st["lastGood"]["versions"] == [2]
    degraded = condition(body, "Degraded")
    assert error in degraded["message"], degraded
    assert "target 3 refused, serving 2" in degraded["message"]
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "Progressing")["reason"] == "RolledBack"
    warnings = [e for e in events_of(api_client, namespace, "broken") if e.type == "Warning"]
    assert any(e.reason == "VersionLoadFailed" and error in e.message for e in warnings), [
        (e.reason, e.message) for e in warnings
    ]

    # The retry annotation tries version 3 again (and it is refused again).
    patch_sm(
        api_client, namespace, "broken", {"metadata": {"annotations": {api.ANNOTATION_RETRY: "1"}}}
    )
    with PodWatcher(api_client, namespace, "broken") as pods:
        retried = new_pod(pods, "3")
        assert retried.name != pod.name

        def refused_again(body: Body) -> bool:
            refused = status_of(body).get("refused") or {}
            return refused.get("retryToken") == "1" and not status_of(body).get("rollout")

        wait_sm(api_client, namespace, "broken", "refused again after retry", refused_again)
        assert pods.wait(lambda p: staying(p) == [old.name], 60), pods.pods()
        assert all(info.serving for _, info in pods.history if info.name == old.name)

    # Back to 2 in the spec: the refusal is over.
    patch_sm(api_client, namespace, "broken", {"spec": {"version": 2}})
    body = wait_serving(api_client, namespace, "broken", "2")
    st = status_of(body)
    assert not st.get("refused")
    assert condition(body, "Degraded")["status"] == "False"
    assert st["targetVersions"] == "2"


def test_slow_v4_rolled_back_after_deadline(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """A version still LOADING at availabilityTimeoutSeconds is refused (VersionLoadTimeout)."""
    base = make_model_dir(model_store, "slow", good=(2, 4))
    spec = hpt_spec(
        base,
        2,
        podAnnotations={LOAD_DELAY: "4=120"},
        rollout={"availabilityTimeoutSeconds": 10},
    )
    create_sm(api_client, namespace, servedmodel("slow", spec))
    wait_serving(api_client, namespace, "slow", "2")

    with PodWatcher(api_client, namespace, "slow") as pods:
        (old,) = pods.serving()
        started = time.monotonic()
        patch_sm(api_client, namespace, "slow", {"spec": {"version": 4}})
        pod = new_pod(pods, "4")
        # Its server loads 4 with its ports closed (the initial load comes first).
        body = wait_refused(api_client, namespace, "slow", "VersionLoadTimeout", timeout=40)
        elapsed = time.monotonic() - started
        assert pods.wait(lambda p: staying(p) == [old.name], 30), pods.pods()
        assert all(info.serving for _, info in pods.history if info.name == old.name)
        assert not any(info.ready for _, info in pods.history if info.name == pod.name)
    assert elapsed >= 10, f"refused after {elapsed:.1f} s, before the deadline"

    st = status_of(body)
    assert body["spec"]["version"] == 4
    assert (st["targetVersions"], st["servingVersions"]) == ("4", "2")
    degraded = condition(body, "Degraded")
    assert "target 4 refused, serving 2" in degraded["message"]
    assert "within 10 s" in degraded["message"], degraded
    warnings = [e for e in events_of(api_client, namespace, "slow") if e.type == "Warning"]
    assert any(e.reason == "VersionLoadTimeout" for e in warnings)


def test_missing_version_folder_refused_on_the_availability_timeout(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """A version whose folder does not exist: the real server waits for it with its
    ports closed, forever (tensorflow/serving#1693), so nothing ever reports a load
    error; the operator refuses it when availabilityTimeoutSeconds runs out, and
    the last good version keeps serving."""
    base = make_model_dir(model_store, "missing", good=(2,))
    spec = hpt_spec(base, 2, rollout={"availabilityTimeoutSeconds": 10})
    create_sm(api_client, namespace, servedmodel("missing", spec))
    wait_serving(api_client, namespace, "missing", "2")

    with PodWatcher(api_client, namespace, "missing") as pods:
        (old,) = pods.serving()
        patch_sm(api_client, namespace, "missing", {"spec": {"version": 7}})
        pod = new_pod(pods, "7")
        body = wait_refused(api_client, namespace, "missing", "VersionLoadTimeout", timeout=60)
        assert pods.wait(lambda p: staying(p) == [old.name], 60), pods.pods()
        assert all(info.serving for _, info in pods.history if info.name == old.name)
        assert not any(info.ready for _, info in pods.history if info.name == pod.name)
        # Its server never opened a port: the gate saw nothing but an unreachable server.
        reasons = {info.gate_reason for _, info in pods.history if info.name == pod.name}
        assert reasons <= {"", "ServerUnreachable"}, reasons

    st = status_of(body)
    assert (st["targetVersions"], st["servingVersions"]) == ("7", "2")
    degraded = condition(body, "Degraded")
    assert "target 7 refused, serving 2" in degraded["message"], degraded
    assert "within 10 s" in degraded["message"], degraded


def test_operator_killed_mid_rollout_finishes_it(
    api_client: Any, sim: Any, crds: None, model_store: Path
) -> None:
    """SIGKILL while v2 is loading; the restarted operator finishes the rollout from
    what it wrote in the status, with no duplicate children."""
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    # A namespace of its own, outside the session's prefix: only this
    # operator process acts in it, so killing it disturbs no other test.
    namespace = f"p-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {"tfso-test": "true"}}})
    log = sim.state_dir / "logs" / f"operator-{namespace}.log"
    proc = OperatorProcess(sim.kubeconfig, namespace, log)
    try:
        wait_until(
            lambda: core.list_namespaced_service_account(namespace).items,
            timeout=30,
            what="default ServiceAccount",
        )
        proc.start()
        base = make_model_dir(model_store, "killed", good=(1, 2))
        spec = hpt_spec(base, 1, replicas=2, podAnnotations={LOAD_DELAY: "2=5"})
        create_sm(api_client, namespace, servedmodel("killed", spec))
        wait_serving(api_client, namespace, "killed", "1")

        with PodWatcher(api_client, namespace, "killed") as pods:
            patch_sm(api_client, namespace, "killed", {"spec": {"version": 2}})
            pod = new_pod(pods, "2")
            # Its server is loading 2 (ports closed until the initial load is done).
            assert status_of(get_sm(api_client, namespace, "killed")).get("rollout")
            proc.kill()
            # Things move on without the operator: v2 finishes loading on the
            # first new pod, whose gate nobody opens.
            wait_until(
                lambda: state_of(pod.target, 2) == "AVAILABLE", timeout=15, what="v2 AVAILABLE"
            )
            assert not pods.pods()[pod.name].ready
            proc.start()
            body = wait_serving(api_client, namespace, "killed", "2", timeout=60)
            assert pods.wait(lambda p: len(staying(p)) == 2, 15), pods.pods()
            current = [p for p in pods.pods().values() if not p.terminating]
            assert all(p.versions == "2" and p.ready for p in current)

        st = status_of(body)
        assert st["lastGood"]["versions"] == [2]
        assert (st["readyReplicas"], st["updatedReplicas"]) == (2, 2)
        # No duplicates: one Deployment, and each config generation a
        # ReplicaSet still uses exists once, with none left over.
        deployments = apps.list_namespaced_deployment(namespace).items
        assert [d.metadata.name for d in deployments] == ["killed"]
        replicasets = apps.list_namespaced_replica_set(namespace).items
        used = {
            (rs.spec.template.metadata.annotations or {}).get(api.ANNOTATION_CONFIG_HASH)
            for rs in replicasets
        }

        def config_maps() -> set[str]:
            return {
                cm.metadata.name.rsplit("-", 1)[-1]
                for cm in core.list_namespaced_config_map(namespace).items
                if cm.metadata.name.startswith("killed-config-")
            }

        wait_until(lambda: config_maps() == used, timeout=15, what=f"ConfigMaps {used}")
        services = sorted(s.metadata.name for s in core.list_namespaced_service(namespace).items)
        assert services == ["killed-grpc", "killed-headless", "killed-rest"]
    finally:
        proc.stop()
        core.delete_namespace(namespace, propagation_policy="Background")


def test_predict_load_sees_no_failure_through_rollout_and_refusal(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """Predict without pause to the Ready pods through v1 -> v2 (2 replicas) and a
    refused broken v3: zero failures, and only loaded versions ever answer."""
    base = make_model_dir(model_store, "load", good=(1, 2), broken=(3,))
    spec = hpt_spec(
        base,
        1,
        replicas=2,
        podAnnotations={LOAD_DELAY: "2=2"},
        rollout={"loadRetries": 0, "loadRetryIntervalSeconds": 1},
    )
    create_sm(api_client, namespace, servedmodel("load", spec))
    wait_serving(api_client, namespace, "load", "1")

    with predict_load(
        api_client, namespace, "load", MODEL, workers=2, max_requests=300_000, max_seconds=120
    ) as load:

        def answered(more: int) -> None:
            target = load.snapshot().ok + more
            wait_until(
                lambda: load.snapshot().ok >= target or load.done,
                timeout=20,
                what=f"{more} more answers",
            )

        answered(50)
        patch_sm(api_client, namespace, "load", {"spec": {"version": 2}})
        wait_serving(api_client, namespace, "load", "2")
        answered(50)
        rollout = load.snapshot()
        assert rollout.failures == [], rollout.summary()
        assert set(rollout.versions) == {1, 2}, rollout.summary()

        patch_sm(api_client, namespace, "load", {"spec": {"version": 3}})
        wait_refused(api_client, namespace, "load", "VersionLoadFailed")
        answered(50)
        assert not load.done, "the load ran out of budget before the end"
    report = load.report
    assert report.failures == [], report.summary()
    assert report.no_serving_pod == 0, report.summary()
    after = report.versions - rollout.versions
    assert set(after) == {2}, f"answers after the v2 rollout: {dict(after)}"
    assert 3 not in report.versions


def test_version_labels_move_with_a_rollout(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """stable -> 1 and canary -> 2 both load; moving stable to 2 (and dropping canary)
    rolls out, and then "stable" answers 2. Requests by label never fail meanwhile."""
    base = make_model_dir(model_store, "labels", good=(1, 2))
    spec = hpt_spec(base, 2, versionLabels={"stable": 1, "canary": 2})
    create_sm(api_client, namespace, servedmodel("labels", spec))
    body = wait_serving(api_client, namespace, "labels", "1,2")
    assert status_of(body)["lastGood"] == {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}

    with predict_load(
        api_client, namespace, "labels", MODEL, label="stable", max_seconds=60
    ) as load:
        (pod,) = load.pods.serving()
        loaded = {s.version: s.state for s in model_status(pod.target, MODEL)}
        assert loaded == {1: "AVAILABLE", 2: "AVAILABLE"}
        assert predict(pod.target, MODEL, label="stable")[0] == 1
        assert predict(pod.target, MODEL, label="canary")[0] == 2
        patch = {"spec": {"versionLabels": {"stable": 2, "canary": None}}}
        patch_sm(api_client, namespace, "labels", patch)
        body = wait_serving(api_client, namespace, "labels", "2")
        (pod,) = load.pods.serving()
        assert predict(pod.target, MODEL, label="stable")[0] == 2
    report = load.report
    assert report.failures == [], report.summary()
    assert set(report.versions) == {1, 2}, report.summary()
    assert status_of(body)["lastGood"] == {"versions": [2], "labels": {"stable": 2}}


def test_hung_model_server_does_not_slow_another_rollout(
    api_client: Any, namespace: str, operator: Any, model_store: Path
) -> None:
    """Probes of a server that accepts connections and never answers cost their
    own ServedModel, not another one's rollout."""
    # The hung pods' "server" answers no call (see hung_grpc_server).
    with hung_grpc_server() as port:
        hung_spec = hpt_spec(
            make_model_dir(model_store, "hung", good=(1,)),
            1,
            replicas=5,
            ports={"grpc": port, "rest": 0},
        )
        create_sm(api_client, namespace, servedmodel("hung", hung_spec))
        base = make_model_dir(model_store, "healthy", good=(1, 2))
        create_sm(api_client, namespace, servedmodel("healthy", hpt_spec(base, 1)))
        wait_serving(api_client, namespace, "healthy", "1")

        def hung_probes_time_out(body: Body) -> bool:
            gates = [p.get("gate") for p in status_of(body).get("pods") or ()]
            return len(gates) == 5 and all(g == "ProbeTimeout" for g in gates)

        wait_sm(api_client, namespace, "hung", "probes timing out", hung_probes_time_out)

        with PodWatcher(api_client, namespace, "healthy") as pods:
            started = time.monotonic()
            patch_sm(api_client, namespace, "healthy", {"spec": {"version": 2}})
            pod = new_pod(pods, "2")
            available = wait_until(
                lambda: state_of(pod.target, 2) == "AVAILABLE" and time.monotonic(),
                timeout=15,
                what="v2 AVAILABLE",
                interval=0.01,
            )
            assert pods.wait(lambda p: p.get(pod.name, pod).ready, 10), "v2 pod never Ready"
            latency = pods.ready_at[pod.name] - available
            wait_serving(api_client, namespace, "healthy", "2")
            took = time.monotonic() - started
        hung = get_sm(api_client, namespace, "hung")
        assert condition(hung, "Ready")["status"] == "False"
    # Each probe of a hung pod holds its slot for the 2 s probe timeout; a
    # healthy pod's gate waiting behind them opens 1.4 s or more late (measured
    # with one probe slot), against about 0.25 s when nothing holds it up.
    assert latency < 1.0, f"v2 pod Ready {latency:.2f} s after its server said AVAILABLE"
    assert took < 15, f"the healthy rollout took {took:.1f} s"
