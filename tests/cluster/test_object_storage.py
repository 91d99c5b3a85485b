"""Models in object storage (issue 14): s3:// pulled by the puller, for real.

The local cluster runs a real S3 server (``rclone serve s3``, started by
``make sim-up``); models are uploaded to it through the S3 API, and each
model-server pod's init containers (puller.py) run on this machine with the
exact command, args and env of the pod spec, Secrets resolved as a kubelet
would (localdev/standin/kubelet_init.py), writing into the pod's emptyDir
folder, which the stand-in server then serves from.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from localdev.sim.cluster import SimCluster
from localdev.support.clients import PodWatcher, predict
from localdev.support.k8s import condition, create_sm, patch_sm, servedmodel, wait_sm
from localdev.support.s3 import create_credentials_secret, make_bucket, upload_version
from localdev.support.waiting import wait_until
from tests.cluster.test_rollout import (
    MODEL,
    events_of,
    status_of,
    wait_refused,
    wait_serving,
)
from tfserving_operator import api

Body = dict[str, Any]


@pytest.fixture
def bucket(sim: SimCluster, model_store: Path) -> str:
    """A fresh bucket holding half_plus_three as versions 1 and 2 under models/hpt."""
    name = f"models-{uuid.uuid4().hex[:8]}"
    make_bucket(sim, name)
    for version in (1, 2):
        upload_version(sim, model_store / "half_plus_three" / "1", name, "models/hpt", version)
    return name


def s3_spec(bucket: str, version: int, secret: str = "s3-creds", **extra: Any) -> Body:
    return {
        "modelName": MODEL,
        "storage": {"uri": f"s3://{bucket}/models/hpt", "credentials": {"secretName": secret}},
        "version": version,
        **extra,
    }


def init_statuses(api_client: Any, namespace: str, pod: str) -> list[Body]:
    body = client.CoreV1Api(api_client).read_namespaced_pod(pod, namespace).to_dict()
    return list((body.get("status") or {}).get("init_container_statuses") or [])


def test_models_from_the_bucket_are_pulled_served_and_rolled_out(
    sim: SimCluster, api_client: Any, namespace: str, operator: Any, bucket: str
) -> None:
    """v1 pulled and served; v2 rolled out from the bucket through the gate, the
    new pod pulling v2 while the v1 pod keeps serving what it pulled."""
    create_credentials_secret(api_client, sim, namespace, "s3-creds")
    create_sm(api_client, namespace, servedmodel("s3m", s3_spec(bucket, 1)))
    wait_serving(api_client, namespace, "s3m", "1", timeout=90)
    with PodWatcher(api_client, namespace, "s3m") as pods:
        (v1_pod,) = pods.serving()
        assert predict(f"{v1_pod.ip}:8500", MODEL)[0] == 1
        inits = init_statuses(api_client, namespace, v1_pod.name)
        assert [s["name"] for s in inits] == ["model-pull-1", "model-publish"]
        assert all(s["state"]["terminated"]["exit_code"] == 0 for s in inits), inits

        patch_sm(api_client, namespace, "s3m", {"spec": {"version": 2}})
        wait_serving(api_client, namespace, "s3m", "2", timeout=120)
        (v2_pod,) = [p for p in pods.serving() if p.versions == "2"]
        assert v2_pod.name != v1_pod.name
        assert predict(f"{v2_pod.ip}:8500", MODEL)[0] == 2
        assert [s["name"] for s in init_statuses(api_client, namespace, v2_pod.name)] == [
            "model-pull-2",
            "model-publish",
        ]
        # The v1 pod served until the v2 pod passed its gate.
        v2_from = min(t for t, info in pods.history if info.name == v2_pod.name and info.serving)
        before = [info for t, info in pods.history if info.name == v1_pod.name and t < v2_from]
        assert before and all(info.serving for info in before), "v1 stopped serving before v2"


def test_a_missing_version_is_refused_with_the_pullers_words(
    sim: SimCluster, api_client: Any, namespace: str, operator: Any, bucket: str
) -> None:
    """Version 3 was never uploaded: S3 answers an empty listing, rclone exits 9
    ("There was nothing to transfer"), the operator refuses 3 as ModelPullFailed
    and version 2 keeps serving."""
    create_credentials_secret(api_client, sim, namespace, "s3-creds")
    create_sm(api_client, namespace, servedmodel("miss", s3_spec(bucket, 2)))
    wait_serving(api_client, namespace, "miss", "2", timeout=90)
    with PodWatcher(api_client, namespace, "miss") as pods:
        (old,) = pods.serving()
        patch_sm(api_client, namespace, "miss", {"spec": {"version": 3}})
        body = wait_refused(api_client, namespace, "miss", "ModelPullFailed", timeout=90)
        assert old.name in [p.name for p in pods.serving()]
        never_left = all(info.serving for _, info in pods.history if info.name == old.name)
        assert never_left, "the v2 pod stopped serving during the refused rollout"
    degraded = condition(body, "Degraded")
    assert "model puller model-pull-3 on pod" in degraded["message"], degraded
    assert "missing or empty in the store" in degraded["message"], degraded
    assert "There was nothing to transfer" in degraded["message"], degraded
    st = status_of(body)
    assert (st["servingVersions"], st["refused"]["versions"]) == ("2", [3])
    warnings = [e for e in events_of(api_client, namespace, "miss") if e.type == "Warning"]
    assert any(e.reason == "ModelPullFailed" for e in warnings), warnings


def test_wrong_credentials_are_refused_in_the_stores_words_and_never_leak(
    sim: SimCluster, api_client: Any, namespace: str, operator: Any, bucket: str
) -> None:
    """A wrong secret key: the store refuses the request (403 Forbidden: the
    puller's first request is a HEAD, whose answer has no body to say more),
    in the condition and a Warning Event; the key reaches no log, Event or status."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    create_credentials_secret(api_client, sim, namespace, "bad-creds", AWS_SECRET_ACCESS_KEY=wrong)
    create_sm(api_client, namespace, servedmodel("badkey", s3_spec(bucket, 1, "bad-creds")))

    def pull_failed(body: Body) -> bool:
        degraded = condition(body, "Degraded")
        return degraded.get("status") == "True" and degraded.get("reason") == "ModelPullFailed"

    body = wait_sm(api_client, namespace, "badkey", "Degraded/ModelPullFailed", pull_failed, 90)
    message = condition(body, "Degraded")["message"]
    assert "StatusCode: 403" in message and "api error Forbidden" in message, message

    def warned() -> bool:
        # The Event is written after the status: wait for it rather than race it.
        warnings = [e for e in events_of(api_client, namespace, "badkey") if e.type == "Warning"]
        return any(
            e.reason == "ModelPullFailed" and "api error Forbidden" in e.message for e in warnings
        )

    wait_until(warned, timeout=30, what="a Warning Event ModelPullFailed quoting the 403")

    core = client.CoreV1Api(api_client)
    every_event = [f"{e.reason} {e.message}" for e in core.list_namespaced_event(namespace).items]
    pods = core.list_namespaced_pod(namespace).items
    pod_statuses = [str(p.status.to_dict()) for p in pods]
    logs = [
        (sim.logs / name).read_text(errors="replace")
        for name in ("standin.log", "s3.log")
        if (sim.logs / name).exists()
    ]
    logs.append(operator.log_path.read_text(errors="replace"))
    for text in [str(body.get("status")), *every_event, *pod_statuses, *logs]:
        assert wrong not in text
        assert sim.s3_credentials()["AWS_SECRET_ACCESS_KEY"] not in text


@pytest.mark.parametrize("policy", [None, {"latest": {"numVersions": 2}}, {"all": {}}])
def test_s3_with_a_latest_or_all_policy_is_refused_at_admission(
    api_client: Any, namespace: str, crds: None, policy: Body | None
) -> None:
    """The puller copies a fixed version set before the server starts: a policy
    that waits for new versions could never see them, so the CRD says so."""
    spec: Body = {"modelName": MODEL, "storage": {"uri": "s3://bkt/models/hpt"}}
    if policy is not None:
        spec["versionPolicy"] = policy
    with pytest.raises(ApiException) as refused:
        create_sm(api_client, namespace, servedmodel("policy", spec))
    assert refused.value.status == 422
    assert "spec.storage.uri s3:// needs spec.version or spec.versionPolicy.specific" in str(
        refused.value.body
    )


def test_gs_keeps_the_servers_own_reader_with_any_policy(
    api_client: Any, namespace: str, crds: None
) -> None:
    """gs:// is read by TF Serving itself, so latest is accepted there."""
    spec = {"modelName": MODEL, "storage": {"uri": "gs://bkt/models/hpt"}}
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, servedmodel("gs", spec), dry_run="All"
    )
