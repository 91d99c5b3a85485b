"""spec.autoscaling: the spec, who owns the replica count, the status, and a
reconcile pass handing the count over (the HPA and ScaledObject renders are
pinned by the golden files autoscaling-hpa.yaml and autoscaling-keda.yaml)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from tests.unit import builders
from tests.unit.test_apply import FakeTransport, applier
from tests.unit.test_reconcile import KEY, Harness, body
from tfserving_operator import api, autoscaling, observe, render, spec
from tfserving_operator.kube import ApiError
from tfserving_operator.spec import DEFAULT_TARGET_CPU_UTILIZATION, VersionSet

OPERATOR = api.FIELD_MANAGER
HANDOVER = api.HANDOVER_FIELD_MANAGER
HPA_MANAGER = "kube-controller-manager"


def autoscaled(version: int = 3, **auto: Any) -> dict[str, Any]:
    sm_body = body(version=version)
    sm_body["spec"] = {**sm_body["spec"], "replicas": 3, "autoscaling": {"maxReplicas": 6, **auto}}
    return sm_body


def parse(sm_body: dict[str, Any]) -> spec.ServedModel:
    return spec.parse(sm_body, "img", "img-gpu")


# ----- the spec ---------------------------------------------------------------


def test_no_metric_named_means_the_default_cpu_target() -> None:
    auto = parse(autoscaled()).autoscaling
    assert auto is not None
    assert (auto.provider, auto.min_replicas, auto.max_replicas) == ("hpa", 1, 6)
    assert auto.target_cpu_utilization == DEFAULT_TARGET_CPU_UTILIZATION
    assert auto.spec_replicas == 3


def test_a_requests_per_second_target_alone_adds_no_cpu_target() -> None:
    auto = parse(autoscaled(requestsPerSecond="20")).autoscaling
    assert auto is not None
    assert (auto.target_cpu_utilization, auto.requests_per_second) == (None, "20")


def test_no_autoscaling_keeps_replicas_in_the_deployment_and_no_autoscaler() -> None:
    sm = parse(body(version=3))
    children = render.render(sm, VersionSet.specific([3]))
    assert sm.autoscaling is None
    assert children.deployment["spec"]["replicas"] == 1
    assert children.autoscaler is None


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    children = render.render(parse(autoscaled(minReplicas=2)), VersionSet.specific([3]))
    assert "replicas" not in children.deployment["spec"]
    assert children.autoscaler is not None
    assert children.autoscaler["kind"] == "HorizontalPodAutoscaler"
    assert children.autoscaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert [m["kind"] for m in children.all()][-2:] == ["HorizontalPodAutoscaler", "Deployment"]


@pytest.mark.parametrize(("maximum", "pdb"), [(1, False), (2, True)])
def test_pdb_follows_the_most_replicas_the_autoscaler_may_make(maximum: int, pdb: bool) -> None:
    sm = parse(autoscaled(maxReplicas=maximum))
    assert (render.render_pdb(replace(sm, replicas=1)) is not None) is pdb


def test_keda_renders_a_scaled_object_and_no_hpa() -> None:
    sm = parse(autoscaled(provider="keda", minReplicas=0, requestsPerSecond="5"))
    children = render.render(sm, VersionSet.specific([3]))
    assert children.autoscaler is not None
    assert children.autoscaler["kind"] == "ScaledObject"
    assert children.autoscaler["spec"]["minReplicaCount"] == 0


def test_keda_cpu_trigger_and_behavior() -> None:
    """A CPU target is a KEDA cpu trigger; behavior goes to the HPA KEDA makes, as a copy."""
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods"}]}}
    sm = parse(
        autoscaled(
            provider="keda",
            minReplicas=1,
            requestsPerSecond="5",
            targetCPUUtilization=70,
            behavior=behavior,
        )
    )
    scaled = render.render_scaled_object(sm)
    assert scaled is not None
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["prometheus", "cpu"]
    assert scaled["spec"]["triggers"][1] == {
        "type": "cpu",
        "metricType": "Utilization",
        "metadata": {"value": "70"},
    }
    assert scaled["spec"]["advanced"] == {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    # The rendered object shares nothing with the parsed spec: changing one
    # (a later normalisation, a test) must not change the other.
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "policies"
    ].append({"type": "Percent"})
    assert sm.autoscaling is not None
    assert sm.autoscaling.behavior == {
        "scaleDown": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods"}]}
    }


def test_hpa_metrics_and_behavior_as_written_and_copied() -> None:
    """spec.autoscaling.metrics follow the operator's own; nothing is shared with the spec."""

    def external() -> dict[str, Any]:
        return {
            "type": "External",
            "external": {
                "metric": {"name": "queue_depth", "selector": {"matchLabels": {"q": "a"}}},
                "target": {"type": "AverageValue", "averageValue": "30"},
            },
        }

    def behavior() -> dict[str, Any]:
        return {"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}]}}

    sm = parse(autoscaled(targetCPUUtilization=60, metrics=[external()], behavior=behavior()))
    hpa = render.render_hpa(sm)
    assert hpa is not None
    cpu = {"type": "Utilization", "averageUtilization": 60}
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": cpu}},
        external(),
    ]
    assert hpa["spec"]["behavior"] == behavior()
    hpa["spec"]["metrics"][1]["external"]["metric"]["selector"]["matchLabels"]["q"] = "b"
    hpa["spec"]["behavior"]["scaleUp"]["policies"].clear()
    assert sm.autoscaling is not None
    assert (list(sm.autoscaling.metrics), sm.autoscaling.behavior) == ([external()], behavior())


# ----- who owns the count -----------------------------------------------------


def deployment(replicas: int, *owners: str) -> Any:
    return builders.deployment(replicas=replicas, replicas_managers=tuple(sorted(owners)))


@pytest.mark.parametrize(
    ("owners", "replicas", "handover"),
    [
        # The operator set the count before autoscaling: hand over that count, clamped.
        ((OPERATOR,), 3, 3),
        ((OPERATOR,), 9, 6),
        # Just created without it (the API server's 1): the autoscaler's minimum.
        ((), 1, 2),
        # Already handed over, or the HPA changed it since: nothing to do.
        ((HANDOVER,), 2, None),
        ((HPA_MANAGER,), 5, None),
        ((HANDOVER, OPERATOR), 2, None),
    ],
)
def test_handover_only_while_the_operator_or_nobody_owns_the_count(
    owners: tuple[str, ...], replicas: int, handover: int | None
) -> None:
    sm = parse(autoscaled(minReplicas=2))
    assert autoscaling.handover_replicas(sm, deployment(replicas, *owners)) == handover


def test_no_handover_without_autoscaling_or_before_the_deployment_exists() -> None:
    assert autoscaling.handover_replicas(parse(body()), deployment(3, OPERATOR)) is None
    assert autoscaling.handover_replicas(parse(autoscaled()), None) is None


def test_checks_expect_the_autoscalers_count_and_the_status_says_spec_replicas_is_ignored() -> None:
    sm = autoscaling.effective(parse(autoscaled(minReplicas=2)), deployment(5, HPA_MANAGER))
    assert sm.replicas == 5
    status = autoscaling.status_of(sm)
    assert status is not None
    assert status["scaler"] == "HorizontalPodAutoscaler/mnist"
    assert status["desiredReplicas"] == 5
    assert "spec.replicas (3) is ignored" in status["message"]
    assert autoscaling.status_of(parse(body())) is None


def test_replicas_managers_are_read_from_managed_fields() -> None:
    meta = {
        "managedFields": [
            {"manager": OPERATOR, "fieldsV1": {"f:spec": {"f:template": {}}}},
            {
                "manager": HPA_MANAGER,
                "subresource": "scale",
                "fieldsV1": {"f:spec": {"f:replicas": {}}},
            },
        ]
    }
    assert observe.replicas_managers(meta) == (HPA_MANAGER,)


def test_hand_over_is_a_forced_apply_under_the_handover_manager() -> None:
    fake = FakeTransport()
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mnist", "namespace": "ml"},
        "spec": {"replicas": 2},
    }
    asyncio.run(applier(fake).hand_over(manifest))
    call = fake.only_call
    assert call.path == "/apis/apps/v1/namespaces/ml/deployments/mnist"
    assert dict(call.query) == {"fieldManager": HANDOVER, "force": "true"}
    assert call.body == manifest


# ----- a reconcile pass ----------------------------------------------------------


def test_first_pass_creates_the_deployment_then_hands_its_count_over_once() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(autoscaled(minReplicas=2))
        await worker.reconcile()
        kinds = [m["kind"] for m in h.applier.applied]
        assert kinds[-2:] == ["HorizontalPodAutoscaler", "Deployment"]
        assert [m["spec"] for m in h.applier.handovers] == [{"replicas": 2}]
        assert h.ctx.cache.deployments[KEY].replicas_managers == (HANDOVER,)
        assert h.applier.status["autoscaling"]["maxReplicas"] == 6
        h.applier.handovers.clear()
        await h.next_pass()
        assert h.applier.handovers == []

    asyncio.run(scenario())


def test_turning_autoscaling_on_hands_over_before_the_apply_that_drops_replicas() -> None:
    async def scenario() -> None:
        h = Harness()
        worker = await h.start(body(version=3))
        await worker.reconcile()
        await h.settle_children()
        # The operator's apply set the count: it owns spec.replicas.
        h.ctx.cache.deployments[KEY] = deployment(1, OPERATOR)
        order: list[str] = []
        apply, hand_over = h.applier.apply, h.applier.hand_over

        async def record_apply(manifest: dict[str, Any], dry_run: bool = False) -> Any:
            if not dry_run:
                order.append(f"apply {manifest['kind']}")
            return await apply(manifest, dry_run)

        async def record_hand_over(manifest: dict[str, Any]) -> Any:
            order.append("hand over")
            return await hand_over(manifest)

        h.applier.apply = record_apply  # type: ignore[method-assign]
        h.applier.hand_over = record_hand_over  # type: ignore[method-assign]
        # Nothing else changes: the Deployment is applied all the same, to let go.
        worker.body = autoscaled(minReplicas=1)
        await h.next_pass()
        assert order.index("hand over") < order.index("apply Deployment")
        assert [m["spec"] for m in h.applier.handovers] == [{"replicas": 1}]
        assert h.ctx.cache.deployments[KEY].replicas_managers == (HANDOVER,)
        order.clear()
        await h.next_pass()
        assert order == []

    asyncio.run(scenario())


def test_keda_not_installed_is_an_invalid_spec_not_a_retry_loop() -> None:
    """A ScaledObject's apply on a cluster without KEDA's CRD answers 404: the
    children applied before it are deleted again, the Deployment never was."""

    async def scenario() -> None:
        h = Harness()
        worker = await h.start(autoscaled(provider="keda", minReplicas=0, requestsPerSecond="5"))
        dry_apply = h.applier.apply

        async def no_keda(manifest: dict[str, Any], dry_run: bool = False) -> Any:
            if manifest["kind"] == "ScaledObject":
                raise ApiError(
                    404,
                    {
                        "reason": "NotFound",
                        "message": "the server could not find the requested resource",
                    },
                )
            return await dry_apply(manifest, dry_run)

        h.applier.apply = no_keda  # type: ignore[method-assign]
        await worker.reconcile()
        assert "Deployment" not in [m["kind"] for m in h.applier.applied]
        assert h.applier.objects == {} and h.applier.deleted
        degraded = {c["type"]: c for c in h.applier.status["conditions"]}["Degraded"]
        assert degraded["reason"] == "InvalidSpec"
        assert degraded["message"].startswith("ScaledObject mnist: the server could not find")

    asyncio.run(scenario())
