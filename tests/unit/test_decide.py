"""decide.py: every decision of a gated rollout, from plain observations (no cluster).

The scenarios follow a ServedModel through v2 serving, a rollout to v3, and
what can happen to it: v3 loads, fails, crashes the server, or is too slow.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from tests.unit.builders import (
    DEFAULT_HASH,
    LOAD_ERROR,
    answered,
    deployment,
    pod,
    probe_error,
    version_status,
)
from tfserving_operator import api, decide, spec
from tfserving_operator.api import Condition, GateReason, Reason
from tfserving_operator.spec import VersionSet
from tfserving_operator.views import ModelState, PodView, ProbeResult

NOW = "2026-03-04T05:06:07Z"
LATER = "2026-03-04T05:09:00Z"
OLD_HASH = "hash-v2"
NEW_HASH = DEFAULT_HASH

# ----- builders -------------------------------------------------------------------


def served(
    generation: int = 4,
    annotations: dict[str, str] | None = None,
    **spec_fields: Any,
) -> spec.ServedModel:
    """A ServedModel asking for version 3 unless told otherwise."""
    body = {
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "uid": "uid-1",
            "generation": generation,
            "annotations": annotations or {},
        },
        "spec": {"storage": {"hostPath": {"path": "/srv/mnist"}}, "version": 3, **spec_fields},
    }
    return spec.parse(body, "tensorflow/serving:x", "tensorflow/serving:x-gpu")


def serving_pod(
    name: str, config_hash: str = OLD_HASH, versions: str = "2", **fields: Any
) -> PodView:
    """A pod that passed its gate and takes traffic (of the old config by default)."""
    return pod(name, config_hash=config_hash, versions=versions, serving=True, **fields)


def refusal(versions: tuple[int, ...] = (3,), token: str = "") -> decide.Refusal:
    return decide.Refusal(
        versions=versions,
        labels=(),
        reason=Reason.VERSION_LOAD_FAILED,
        message=f"model server on pod mnist-b: version 3: {LOAD_ERROR}",
        time=NOW,
        retry_token=token,
    )


V2 = VersionSet.specific([2])
V3 = VersionSet.specific([3])


def outcome(**fields: Any) -> decide.Outcome:
    base: dict[str, Any] = {
        "serve": V3,
        "config_hash": NEW_HASH,
        "refused": None,
        "failure": None,
        "complete": False,
        "last_good": V2,
        "rollout_start": NOW,
    }
    return decide.Outcome(**{**base, **fields})


def conditions_of(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st["conditions"]}


# ----- which versions to serve ---------------------------------------------------------


class TestChooseServingSet:
    def test_no_memory_serves_the_spec(self) -> None:
        assert decide.choose_serving_set(served(), decide.Memory()) == (V3, None)

    def test_refusal_in_force_serves_the_last_good_set(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal())
        assert decide.choose_serving_set(served(), memory) == (V2, refusal())

    def test_a_new_target_clears_the_refusal(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal())
        serve, refused = decide.choose_serving_set(served(version=4), memory)
        assert (serve, refused) == (VersionSet.specific([4]), None)

    def test_spec_back_to_the_good_version_clears_the_refusal(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal())
        assert decide.choose_serving_set(served(version=2), memory) == (V2, None)

    def test_changed_labels_are_a_new_target(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal())
        serve, refused = decide.choose_serving_set(served(versionLabels={"canary": 3}), memory)
        assert refused is None
        assert serve.labels == (("canary", 3),)

    def test_retry_annotation_retries(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal(token=""))
        retried = served(annotations={api.ANNOTATION_RETRY: "1"})
        assert decide.choose_serving_set(retried, memory) == (V3, None)

    def test_same_retry_token_keeps_the_refusal(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal(token="1"))
        retried = served(annotations={api.ANNOTATION_RETRY: "1"})
        assert decide.choose_serving_set(retried, memory) == (V2, refusal(token="1"))

    def test_nothing_good_yet_keeps_the_target_deployed(self) -> None:
        memory = decide.Memory(refused=refusal())
        assert decide.choose_serving_set(served(), memory) == (V3, refusal())

    def test_a_policy_target_never_matches_a_refusal(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal())
        latest = served(version=None, versionPolicy={"latest": {}})
        serve, refused = decide.choose_serving_set(latest, memory)
        assert (serve.policy, refused) == ("latest", None)

    def test_memory_round_trips_through_the_status(self) -> None:
        labelled = VersionSet.specific([3], {"canary": 3, "stable": 2})
        memory = decide.memory_from_status(
            {
                "lastGood": labelled.to_status(),
                "refused": refusal((2, 3), token="7").to_status(),
                "rollout": {"versions": [3], "configHash": NEW_HASH, "startTime": NOW},
                "servingVersions": "2",
            }
        )
        assert memory.last_good == labelled
        assert memory.refused == refusal((2, 3), token="7")
        assert (memory.rollout_hash, memory.rollout_start) == (NEW_HASH, NOW)

    def test_empty_status_is_empty_memory(self) -> None:
        assert decide.memory_from_status(None) == decide.Memory()
        assert decide.memory_from_status({}) == decide.Memory()


# ----- the availability gate ---------------------------------------------------------


class TestGateFor:
    @pytest.mark.parametrize(
        ("error", "reason"),
        [
            ("ServerUnreachable", GateReason.UNREACHABLE),
            ("ProbeTimeout", GateReason.TIMEOUT),
            ("ModelNotFound", GateReason.NOT_FOUND),
            ("ProbeFailed", GateReason.PROBE_FAILED),
            ("SomethingNew", GateReason.PROBE_FAILED),
        ],
    )
    def test_no_answer_closes_the_gate(self, error: str, reason: str) -> None:
        decision = decide.gate_for(pod("a"), probe_error("a", error, f"model server a: {error}"))
        assert decision == decide.GateDecision("a", False, reason, f"model server a: {error}")

    def test_no_answer_without_message_says_the_reason(self) -> None:
        decision = decide.gate_for(pod("a"), probe_error("a", "ProbeTimeout"))
        assert decision.message == "ProbeTimeout"

    def test_available_opens_the_gate(self) -> None:
        decision = decide.gate_for(pod("a"), answered("a", version_status(3, ModelState.AVAILABLE)))
        assert decision == decide.GateDecision("a", True, GateReason.AVAILABLE, "AVAILABLE: 3")

    @pytest.mark.parametrize(
        "state", [ModelState.START, ModelState.LOADING, ModelState.UNKNOWN, ModelState.UNLOADING]
    )
    def test_not_yet_available_keeps_it_closed(self, state: ModelState) -> None:
        decision = decide.gate_for(pod("a"), answered("a", version_status(3, state)))
        assert (decision.open, decision.reason) == (False, GateReason.LOADING)
        assert decision.message == f"version 3 is {state.name}"

    def test_version_unknown_to_the_server_keeps_it_closed(self) -> None:
        decision = decide.gate_for(pod("a"), answered("a", version_status(2, ModelState.AVAILABLE)))
        assert (decision.open, decision.reason) == (False, GateReason.LOADING)
        assert "version 3 not yet known" in decision.message

    def test_end_with_error_is_a_load_failure_in_the_servers_words(self) -> None:
        probe = answered("a", version_status(3, ModelState.END, code=3, message=LOAD_ERROR))
        decision = decide.gate_for(pod("a"), probe)
        assert (decision.open, decision.reason) == (False, GateReason.FAILED)
        assert decision.message == f"version 3: {LOAD_ERROR}"

    def test_end_with_error_and_no_message_names_the_code(self) -> None:
        probe = answered("a", version_status(3, ModelState.END, code=5))
        assert decide.gate_for(pod("a"), probe).message == "version 3: NOT_FOUND"

    def test_end_without_error_is_not_a_failure(self) -> None:
        decision = decide.gate_for(pod("a"), answered("a", version_status(3, ModelState.END)))
        assert (decision.open, decision.reason) == (False, GateReason.LOADING)

    def test_every_labelled_version_must_be_available(self) -> None:
        labelled = pod("a", versions="2,3")
        loading = answered(
            "a", version_status(3, ModelState.AVAILABLE), version_status(2, ModelState.LOADING)
        )
        assert decide.gate_for(labelled, loading).message == "version 2 is LOADING"
        both = answered(
            "a", version_status(3, ModelState.AVAILABLE), version_status(2, ModelState.AVAILABLE)
        )
        assert decide.gate_for(labelled, both).open

    def test_other_versions_do_not_matter(self) -> None:
        probe = answered(
            "a",
            version_status(4, ModelState.END, code=3, message="broken"),
            version_status(3, ModelState.AVAILABLE),
        )
        assert decide.gate_for(pod("a"), probe).open

    @pytest.mark.parametrize("policy", ["latest", "latest:2", "all"])
    def test_policy_opens_on_any_available_version(self, policy: str) -> None:
        probe = answered(
            "a", version_status(5, ModelState.LOADING), version_status(4, ModelState.AVAILABLE)
        )
        decision = decide.gate_for(pod("a", versions=policy), probe)
        assert decision == decide.GateDecision("a", True, GateReason.AVAILABLE, "AVAILABLE: 4")

    def test_policy_with_nothing_available_yet_is_loading(self) -> None:
        probe = answered(
            "a",
            version_status(5, ModelState.LOADING),
            version_status(4, ModelState.END, code=3, message="x"),
        )
        decision = decide.gate_for(pod("a", versions="latest"), probe)
        assert (decision.open, decision.reason) == (False, GateReason.LOADING)

    def test_policy_with_every_version_failed_is_a_failure(self) -> None:
        probe = answered("a", version_status(5, ModelState.END, code=3, message=LOAD_ERROR))
        decision = decide.gate_for(pod("a", versions="latest"), probe)
        assert (decision.open, decision.reason) == (False, GateReason.FAILED)
        assert LOAD_ERROR in decision.message

    @pytest.mark.parametrize(
        ("annotation", "required"),
        [("3", (3,)), ("2,3", (2, 3)), (" 2, 3 ", (2, 3)), ("latest", None), ("", None)],
    )
    def test_required_versions(self, annotation: str, required: tuple[int, ...] | None) -> None:
        assert decide.required_versions(annotation) == required


class TestGateChanges:
    def test_first_answer_sets_the_gate(self) -> None:
        probes = {"a": answered("a", version_status(3, ModelState.LOADING))}
        (change,) = decide.gate_changes([pod("a")], probes)
        assert (change.open, change.reason) == (False, GateReason.LOADING)

    def test_same_decision_writes_nothing(self) -> None:
        probes = {
            "a": answered("a", version_status(2, ModelState.AVAILABLE)),
            "b": answered("b", version_status(3, ModelState.LOADING)),
        }
        waiting = pod("b", gate=False, gate_reason=GateReason.LOADING)
        assert decide.gate_changes([serving_pod("a"), waiting], probes) == []

    def test_new_reason_on_a_closed_gate_is_written(self) -> None:
        probes = {"b": answered("b", version_status(3, ModelState.END, code=3, message=LOAD_ERROR))}
        waiting = pod("b", gate=False, gate_reason=GateReason.LOADING)
        (change,) = decide.gate_changes([waiting], probes)
        assert change.reason == GateReason.FAILED

    def test_open_gate_closes_when_the_version_goes(self) -> None:
        probes = {"a": answered("a", version_status(2, ModelState.END))}
        (change,) = decide.gate_changes([serving_pod("a")], probes)
        assert not change.open

    def test_terminating_and_unprobed_pods_are_left_alone(self) -> None:
        probes = {"a": answered("a", version_status(3, ModelState.LOADING))}
        assert decide.gate_changes([pod("a", terminating=True), pod("b")], probes) == []


class TestGateHysteresis:
    """An open gate rides out N-1 probe timeouts (a busy server's gRPC pool); a
    definite answer closes it at once; a closed gate opens on the first good answer."""

    THRESHOLD = 3

    def gate(self, probe: ProbeResult, failures: int, open_now: bool = True) -> decide.GateDecision:
        current = serving_pod("a", NEW_HASH, "3") if open_now else pod("a", gate=False)
        return decide.gate_for(current, probe, failures, self.THRESHOLD)

    def test_two_timeouts_keep_an_open_gate_open_the_third_closes_it(self) -> None:
        timeout = probe_error("a", "ProbeTimeout", "deadline exceeded after 2 s")
        first, second, third = (self.gate(timeout, n) for n in (1, 2, 3))
        assert (first.open, first.held, first.reason) == (True, True, GateReason.TIMEOUT)
        assert "1 of 3" in first.message
        assert (second.open, second.held) == (True, True)
        assert (third.open, third.held, third.reason) == (False, False, GateReason.TIMEOUT)

    @pytest.mark.parametrize("reason", ["ServerUnreachable", "ProbeFailed", "SomethingNew"])
    def test_every_transport_error_counts_the_same(self, reason: str) -> None:
        error = probe_error("a", reason)
        assert decide.uncertain(error)
        assert self.gate(error, 2).open
        assert not self.gate(error, 3).open

    def test_not_found_closes_at_once(self) -> None:
        not_found = probe_error("a", "ModelNotFound", "Could not find any versions of model mnist")
        assert not decide.uncertain(not_found)
        decision = self.gate(not_found, 0)
        assert (decision.open, decision.reason) == (False, GateReason.NOT_FOUND)

    @pytest.mark.parametrize("state", [ModelState.LOADING, ModelState.UNLOADING, ModelState.END])
    def test_a_version_not_available_closes_at_once(self, state: ModelState) -> None:
        decision = self.gate(answered("a", version_status(3, state)), 0)
        assert not decision.open
        assert not decision.held

    def test_a_closed_gate_stays_closed_on_a_timeout(self) -> None:
        decision = self.gate(probe_error("a", "ProbeTimeout"), 1, open_now=False)
        assert (decision.open, decision.held) == (False, False)

    def test_a_closed_gate_opens_on_the_first_good_answer(self) -> None:
        decision = self.gate(answered("a", version_status(3, ModelState.AVAILABLE)), 0, False)
        assert decision.open

    def test_threshold_one_closes_on_the_first_timeout(self) -> None:
        open_pod = serving_pod("a", NEW_HASH, "3")
        assert not decide.gate_for(open_pod, probe_error("a", "ProbeTimeout"), 1, 1).open

    def test_a_held_gate_is_not_written_but_shows_in_the_pod_view(self) -> None:
        open_pod = serving_pod("a", NEW_HASH, "3")
        probes = {"a": probe_error("a", "ProbeTimeout")}
        assert decide.gate_changes([open_pod], probes, {"a": 2}, self.THRESHOLD) == []
        decisions = decide.gate_decisions([open_pod], probes, {"a": 2}, self.THRESHOLD)
        (seen,) = decide.with_gates([open_pod], decisions)
        assert (seen.gate, seen.ready, seen.gate_reason) == (True, True, GateReason.TIMEOUT)
        (change,) = decide.gate_changes([open_pod], probes, {"a": 3}, self.THRESHOLD)
        assert (change.open, change.reason) == (False, GateReason.TIMEOUT)

    def test_status_pods_report_the_failing_probe_of_a_held_gate(self) -> None:
        open_pod = serving_pod("a", NEW_HASH, "3")
        probes = {"a": probe_error("a", "ProbeTimeout")}
        decisions = decide.gate_decisions([open_pod], probes, {"a": 1}, self.THRESHOLD)
        pods = decide.with_gates([open_pod], decisions)
        result = outcome(serve=V3, complete=True, last_good=V3)
        st = decide.compute_status(served(), result, deployment(), pods, probes, [], NOW)
        assert st["pods"] == [{"name": "a", "ready": True, "gate": GateReason.TIMEOUT}]
        assert st["readyReplicas"] == 1


# ----- rollout failure and completion ----------------------------------------------------


START = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


class TestDetectFailure:
    def detect(
        self, pods: list[PodView], probes: dict[str, ProbeResult], seconds: float = 5
    ) -> decide.Failure | None:
        return decide.detect_failure(
            served(), NEW_HASH, pods, probes, START, START + timedelta(seconds=seconds)
        )

    def test_loading_is_no_failure(self) -> None:
        probes = {"b": answered("b", version_status(3, ModelState.LOADING))}
        assert self.detect([serving_pod("a"), pod("b")], probes) is None

    def test_load_error_on_a_new_pod(self) -> None:
        probes = {"b": answered("b", version_status(3, ModelState.END, code=3, message=LOAD_ERROR))}
        failure = self.detect([serving_pod("a"), pod("b")], probes)
        assert failure == decide.Failure(
            Reason.VERSION_LOAD_FAILED, f"model server on pod b: version 3: {LOAD_ERROR}"
        )

    def test_errors_on_old_or_terminating_pods_do_not_count(self) -> None:
        broken = answered("x", version_status(3, ModelState.END, code=3, message=LOAD_ERROR))
        old = pod("a", config_hash=OLD_HASH)
        going = pod("x", terminating=True)
        probes = {"a": broken, "x": broken}
        assert self.detect([old, going], probes) is None

    def test_server_exited_while_loading(self) -> None:
        crashed = pod(
            "b",
            running=False,
            phase="Running",
            restart_count=2,
            termination_message="E0101 loader: Failed to load servable mnist version 3: "
            + LOAD_ERROR,
        )
        failure = self.detect([serving_pod("a"), crashed], {})
        assert failure is not None
        assert failure.reason == Reason.VERSION_LOAD_FAILED
        assert "pod b exited while loading" in failure.message
        assert LOAD_ERROR in failure.message

    def test_termination_message_is_cut_at_whole_lines(self) -> None:
        log = "\n".join(f"I1201 loader_harness.cc:78] line {i} " + "x" * 80 for i in range(20))
        last = "Failed to start server. Error: " + LOAD_ERROR
        crashed = pod("b", restart_count=1, exit_code=255, termination_message=f"{log}\n{last}")
        failure = self.detect([crashed], {})
        assert failure is not None
        quoted = failure.message.split("exited while loading: ", 1)[1]
        assert quoted.endswith(last)
        assert all(line.startswith(("I1201", "Failed")) for line in quoted.splitlines())
        assert len(quoted) <= 600

    def test_long_termination_message_keeps_its_end(self) -> None:
        crashed = pod("b", restart_count=1, termination_message="x" * 5000 + LOAD_ERROR)
        failure = self.detect([crashed], {})
        assert failure is not None
        assert failure.message.endswith(LOAD_ERROR)
        assert len(failure.message) < 700

    def test_server_exit_code_255_is_a_load_failure(self) -> None:
        last_words = "Failed to start server. Error: " + LOAD_ERROR
        crashed = pod(
            "b", restart_count=1, exit_code=255, exit_reason="Error", termination_message=last_words
        )
        failure = self.detect([crashed], {})
        assert failure is not None
        assert failure.reason == Reason.VERSION_LOAD_FAILED
        assert "Failed to start server" in failure.message

    def test_a_kubelet_kill_is_left_to_the_availability_timeout(self) -> None:
        """137: the startup probe gave up on a server still loading; not a load error,
        but its last log lines say why it waited."""
        last_log = "No versions of servable mnist found under base path /models/mnist"
        killed = pod(
            "b", restart_count=1, exit_code=137, exit_reason="Error", termination_message=last_log
        )
        assert self.detect([killed], {}) is None
        failure = self.detect([killed], {}, seconds=601)
        assert failure is not None
        assert failure.reason == Reason.VERSION_LOAD_TIMEOUT
        assert f"restarted 1x, last log: {last_log}" in failure.message

    def test_out_of_memory_while_loading_is_a_load_failure(self) -> None:
        oom = pod(
            "b", restart_count=1, exit_code=137, exit_reason="OOMKilled", termination_message="..."
        )
        failure = self.detect([oom], {})
        assert failure is not None
        assert failure.reason == Reason.VERSION_LOAD_FAILED
        assert "OOMKilled" in failure.message

    def test_restart_without_a_message_is_no_failure(self) -> None:
        assert self.detect([pod("b", restart_count=1)], {}) is None

    def test_restart_after_the_gate_opened_is_no_load_failure(self) -> None:
        restarted = pod("b", restart_count=1, gate=True, termination_message="OOMKilled")
        assert self.detect([restarted], {}) is None

    def test_deadline_passed(self) -> None:
        probes = {"b": answered("b", version_status(3, ModelState.LOADING))}
        waiting = pod("b", gate=False, gate_reason=GateReason.LOADING)
        failure = self.detect([serving_pod("a"), waiting], probes, seconds=601)
        assert failure is not None
        assert failure.reason == Reason.VERSION_LOAD_TIMEOUT
        assert failure.message == (
            "versions 3 not AVAILABLE on every new replica within 600 s (b: VersionLoading)"
        )

    def test_deadline_not_yet_passed(self) -> None:
        assert self.detect([pod("b")], {}, seconds=599) is None

    def test_deadline_with_no_new_pod_running(self) -> None:
        failure = self.detect([serving_pod("a")], {}, seconds=700)
        assert failure is not None
        assert "(no new pod running)" in failure.message

    def test_no_start_time_no_deadline(self) -> None:
        failure = decide.detect_failure(served(), NEW_HASH, [pod("b")], {}, None, START)
        assert failure is None

    def test_custom_deadline(self) -> None:
        sm = served(rollout={"availabilityTimeoutSeconds": 10})
        late = START + timedelta(seconds=11)
        failure = decide.detect_failure(sm, NEW_HASH, [pod("b")], {}, START, late)
        assert failure is not None
        assert "within 10 s" in failure.message


def failed_pull(message: str, code: int) -> PodView:
    """A new pod whose puller (model-pull-3) exited `code` with `message`."""
    return pod(
        "b",
        running=False,
        pull_container="model-pull-3",
        pull_failure=message,
        pull_exit_code=code,
    )


class TestPullFailure:
    """A failed model pull (puller.py) is refused like a failed load, in the store's words."""

    def failure(self, message: str, code: int) -> decide.Failure:
        result = decide.detect_failure(
            served(), NEW_HASH, [failed_pull(message, code)], {}, START, START
        )
        assert result is not None
        assert result.reason == Reason.MODEL_PULL_FAILED
        return result

    def test_the_store_error_refuses_the_new_pods_versions(self) -> None:
        failure = self.failure("ERROR : Attempt 3/3 failed\nFailed to copy: api error Forbidden", 1)
        assert failure.message.startswith("model puller model-pull-3 on pod b failed: ")
        assert failure.message.endswith("Failed to copy: api error Forbidden")

    def test_nothing_to_copy_is_spelled_out(self) -> None:
        failure = self.failure("INFO  : There was nothing to transfer", 9)
        assert "the version folder is missing or empty in the store" in failure.message

    def test_old_pods_pull_failures_do_not_count(self) -> None:
        old = serving_pod("a", pull_container="model-pull-2", pull_failure="old", pull_exit_code=1)
        assert decide.detect_failure(served(), NEW_HASH, [old], {}, START, START) is None


# ----- the rollout plan: refusal and fallback -------------------------------------------


def hash_of(versions: VersionSet) -> str:
    """Stands in for render's config hash: hash-v2, hash-v3, hash-latest..."""
    return {V2: OLD_HASH, V3: NEW_HASH}.get(versions, f"hash-{versions.describe()}")


class TestPlanRollout:
    """decide.plan_rollout owns the refusal: the Worker only carries the outcome out."""

    def plan(
        self,
        sm: spec.ServedModel | None = None,
        memory: decide.Memory | None = None,
        pods: list[PodView] | None = None,
        probes: dict[str, ProbeResult] | None = None,
        seconds: float = 5,
        deployment_view: Any = None,
    ) -> decide.Outcome:
        sm = sm or served()
        return decide.plan_rollout(
            sm,
            memory or decide.Memory(last_good=V2),
            lambda versions: hash_of(versions),
            deployment_view
            if deployment_view is not None
            else deployment(NEW_HASH, updated_replicas=0),
            pods if pods is not None else [serving_pod("a"), pod("b")],
            probes or {},
            START + timedelta(seconds=seconds),
        )

    def broken_v3(self) -> dict[str, ProbeResult]:
        return {"b": answered("b", version_status(3, ModelState.END, code=3, message=LOAD_ERROR))}

    def test_rolling_out_goes_on(self) -> None:
        result = self.plan(probes={"b": answered("b", version_status(3, ModelState.LOADING))})
        assert (result.serve, result.config_hash, result.rerender) == (V3, NEW_HASH, False)
        assert (result.refused, result.failure, result.complete) == (None, None, False)
        assert result.last_good == V2
        assert result.rollout_start == decide.format_time(START + timedelta(seconds=5))

    def test_the_rollout_clock_keeps_running_for_the_same_config(self) -> None:
        memory = decide.Memory(last_good=V2, rollout_hash=NEW_HASH, rollout_start=NOW)
        assert self.plan(memory=memory).rollout_start == NOW

    def test_load_failure_with_a_last_good_set_refuses_and_falls_back(self) -> None:
        result = self.plan(probes=self.broken_v3())
        assert result.rerender
        assert (result.serve, result.config_hash, result.last_good) == (V2, OLD_HASH, V2)
        assert result.failure is None
        assert result.refused is not None
        assert (result.refused.versions, result.refused.reason) == (
            (3,),
            Reason.VERSION_LOAD_FAILED,
        )
        assert LOAD_ERROR in result.refused.message
        assert result.refused.time == "2026-03-04T05:06:12Z"
        assert not result.complete

    def test_refusal_records_the_retry_token_in_force(self) -> None:
        sm = served(annotations={api.ANNOTATION_RETRY: "7"})
        result = self.plan(sm=sm, probes=self.broken_v3())
        assert result.refused is not None
        assert result.refused.retry_token == "7"

    def test_no_refusal_without_a_last_good_set(self) -> None:
        result = self.plan(memory=decide.Memory(), probes=self.broken_v3())
        assert (result.serve, result.refused, result.rerender) == (V3, None, False)
        assert result.failure is not None
        assert result.failure.reason == Reason.VERSION_LOAD_FAILED

    def test_refusal_kept_while_the_spec_names_the_same_set_and_token(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal(token="1"))
        sm = served(annotations={api.ANNOTATION_RETRY: "1"})
        result = self.plan(
            sm=sm,
            memory=memory,
            pods=[serving_pod("a")],
            deployment_view=deployment(OLD_HASH),
        )
        assert (result.serve, result.refused, result.rerender) == (V2, refusal(token="1"), False)
        assert result.complete
        assert result.failure is None

    def test_a_new_retry_token_retries_the_target(self) -> None:
        memory = decide.Memory(last_good=V2, refused=refusal(token="1"))
        sm = served(annotations={api.ANNOTATION_RETRY: "2"})
        result = self.plan(sm=sm, memory=memory)
        assert (result.serve, result.refused, result.rerender) == (V3, None, False)

    @pytest.mark.parametrize("policy", [{"latest": {}}, {"all": {}}])
    def test_a_policy_target_is_never_refused(self, policy: dict[str, Any]) -> None:
        sm = served(version=None, versionPolicy=policy)
        failing = {
            "b": answered("b", version_status(4, ModelState.END, code=3, message=LOAD_ERROR))
        }
        result = self.plan(
            sm=sm,
            pods=[serving_pod("a"), pod("b", config_hash=hash_of(sm.target), versions="latest")],
            probes=failing,
        )
        assert (result.serve, result.refused, result.rerender) == (sm.target, None, False)
        assert result.failure is not None

    def test_timeout_refuses(self) -> None:
        memory = decide.Memory(last_good=V2, rollout_hash=NEW_HASH, rollout_start=NOW)
        probes = {"b": answered("b", version_status(3, ModelState.LOADING))}
        result = self.plan(memory=memory, probes=probes, seconds=601)
        assert result.rerender
        assert result.refused is not None
        assert result.refused.reason == Reason.VERSION_LOAD_TIMEOUT
        assert result.serve == V2

    def test_before_the_timeout_nothing_is_refused(self) -> None:
        memory = decide.Memory(last_good=V2, rollout_hash=NEW_HASH, rollout_start=NOW)
        probes = {"b": answered("b", version_status(3, ModelState.LOADING))}
        assert self.plan(memory=memory, probes=probes, seconds=599).refused is None

    def test_a_complete_rollout_becomes_the_last_good_set(self) -> None:
        result = self.plan(pods=[serving_pod("b", NEW_HASH, "3")], deployment_view=deployment())
        assert (result.complete, result.last_good, result.serve) == (True, V3, V3)

    def test_failure_of_the_last_good_set_itself_is_not_refused(self) -> None:
        result = self.plan(memory=decide.Memory(last_good=V3), probes=self.broken_v3())
        assert (result.refused, result.rerender) == (None, False)
        assert result.failure is not None


class TestRolloutComplete:
    def test_new_pod_serving_old_gone(self) -> None:
        pods = [serving_pod("b", NEW_HASH, "3"), serving_pod("a", terminating=True)]
        assert decide.rollout_complete(served(), NEW_HASH, deployment(), pods)

    def test_no_deployment_yet(self) -> None:
        assert not decide.rollout_complete(served(), NEW_HASH, None, [])

    def test_deployment_not_yet_on_the_new_config(self) -> None:
        pods = [serving_pod("a")]
        assert not decide.rollout_complete(served(), NEW_HASH, deployment(OLD_HASH), pods)

    def test_deployment_controller_behind(self) -> None:
        pods = [serving_pod("b", NEW_HASH, "3")]
        behind = deployment(observed_generation=6)
        assert not decide.rollout_complete(served(), NEW_HASH, behind, pods)

    def test_old_pod_still_running(self) -> None:
        pods = [serving_pod("b", NEW_HASH, "3"), serving_pod("a")]
        assert not decide.rollout_complete(served(), NEW_HASH, deployment(), pods)

    def test_new_pod_not_through_its_gate(self) -> None:
        pods = [pod("b", ready=True, gate=False)]
        assert not decide.rollout_complete(served(), NEW_HASH, deployment(), pods)

    def test_template_change_with_the_same_config(self) -> None:
        # An image change: old and new pods carry the same config hash; the
        # Deployment still counts the old ReplicaSet's pod.
        pods = [serving_pod("a", NEW_HASH, "3"), serving_pod("b", NEW_HASH, "3")]
        rolling = deployment(current_replicas=2, updated_replicas=1)
        assert not decide.rollout_complete(served(), NEW_HASH, rolling, pods)

    def test_too_few_replicas(self) -> None:
        pods = [serving_pod("b", NEW_HASH, "3")]
        two = deployment(replicas=2, updated_replicas=1)
        assert not decide.rollout_complete(served(replicas=2), NEW_HASH, two, pods)

    def test_scaled_to_zero(self) -> None:
        none = deployment(replicas=0, updated_replicas=0, current_replicas=0)
        assert decide.rollout_complete(served(replicas=0), NEW_HASH, none, [])

    def test_at_zero_replicas_with_no_pod_the_controller_is_not_waited_for(self) -> None:
        """A new Deployment at zero replicas, before the Deployment controller saw it."""
        new = deployment(replicas=0, updated_replicas=0, current_replicas=0, observed_generation=0)
        assert decide.rollout_complete(served(replicas=0), NEW_HASH, new, [])

    def test_scaling_down_to_zero_waits_for_the_controller(self) -> None:
        # Before the controller sees the new spec its status still counts the pods.
        stale = deployment(
            replicas=0, updated_replicas=2, current_replicas=2, observed_generation=6
        )
        assert not decide.rollout_complete(served(replicas=0), NEW_HASH, stale, [])
        counted = deployment(
            replicas=0, updated_replicas=0, current_replicas=0, observed_generation=6
        )
        pods = [serving_pod("b", NEW_HASH, "3", terminating=True)]
        assert not decide.rollout_complete(served(replicas=0), NEW_HASH, counted, pods)


# ----- status ---------------------------------------------------------------------------


class TestComputeStatus:
    def compute(
        self,
        result: decide.Outcome,
        pods: list[PodView],
        probes: dict[str, ProbeResult] | None = None,
        sm: spec.ServedModel | None = None,
        previous: list[dict[str, Any]] | None = None,
        now: str = NOW,
    ) -> dict[str, Any]:
        return decide.compute_status(
            sm or served(), result, deployment(), pods, probes or {}, previous or [], now
        )

    def test_rolling_out(self) -> None:
        probes = {
            "a": answered("a", version_status(2, ModelState.AVAILABLE)),
            "b": answered("b", version_status(3, ModelState.LOADING)),
        }
        waiting = pod("b", gate=False, gate_reason=GateReason.LOADING)
        st = self.compute(outcome(), [serving_pod("a"), waiting], probes)
        conds = conditions_of(st)
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "RollingOut")
        assert conds["Progressing"]["status"] == "True"
        assert conds["Progressing"]["message"] == (
            "rolling out 3: 0/1 new replicas AVAILABLE, serving 2"
        )
        assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == (
            "False",
            "AsExpected",
        )
        assert st["servingVersions"] == "2"
        assert st["targetVersions"] == "3"
        assert st["rollout"] == {"versions": [3], "configHash": NEW_HASH, "startTime": NOW}
        assert (st["replicas"], st["readyReplicas"], st["updatedReplicas"]) == (2, 1, 1)
        assert st["replicasSummary"] == "1/1"
        assert st["pods"] == [
            {
                "name": "a",
                "ready": True,
                "gate": "ModelAvailable",
                "versions": [{"version": 2, "state": "AVAILABLE"}],
            },
            {
                "name": "b",
                "ready": False,
                "gate": "VersionLoading",
                "versions": [{"version": 3, "state": "LOADING"}],
            },
        ]
        assert st["lastGood"] == {"versions": [2], "labels": {}}
        assert st["refused"] is None

    def test_complete(self) -> None:
        probes = {"b": answered("b", version_status(3, ModelState.AVAILABLE))}
        st = self.compute(
            outcome(complete=True, last_good=V3), [serving_pod("b", NEW_HASH, "3")], probes
        )
        conds = conditions_of(st)
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == (
            "True",
            "VersionsAvailable",
        )
        assert conds["Ready"]["message"] == "1/1 replicas serve 3"
        assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == (
            "False",
            "RolloutComplete",
        )
        assert conds["Degraded"]["status"] == "False"
        assert st["rollout"] is None
        assert st["servingVersions"] == "3"
        assert st["lastGood"] == {"versions": [3], "labels": {}}
        assert all(c["observedGeneration"] == 4 for c in st["conditions"])
        assert st["observedGeneration"] == 4

    def test_refused_serving_the_last_good_set(self) -> None:
        refused = refusal()
        result = outcome(serve=V2, config_hash=OLD_HASH, refused=refused, complete=True)
        probes = {"a": answered("a", version_status(2, ModelState.AVAILABLE))}
        st = self.compute(result, [serving_pod("a")], probes)
        conds = conditions_of(st)
        assert conds["Degraded"]["status"] == "True"
        assert conds["Degraded"]["reason"] == "VersionLoadFailed"
        assert conds["Degraded"]["message"] == (
            f"target 3 refused, serving 2: model server on pod mnist-b: version 3: {LOAD_ERROR}"
        )
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == (
            "False",
            "VersionLoadFailed",
        )
        assert conds["Ready"]["message"] == "target 3 refused, serving 2"
        assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == (
            "False",
            "RolledBack",
        )
        assert (st["targetVersions"], st["servingVersions"]) == ("3", "2")
        assert st["refused"]["versions"] == [3]
        assert st["refused"]["reason"] == "VersionLoadFailed"
        assert st["rollout"] is None

    def test_refused_while_rolling_back(self) -> None:
        result = outcome(serve=V2, config_hash=OLD_HASH, refused=refusal())
        st = self.compute(result, [serving_pod("a"), pod("b")])
        conds = conditions_of(st)
        assert conds["Degraded"]["reason"] == "VersionLoadFailed"
        assert conds["Progressing"]["status"] == "True"
        assert st["rollout"]["versions"] == [2]

    def test_refused_with_nothing_to_fall_back_to(self) -> None:
        result = outcome(refused=refusal(), last_good=None)
        st = self.compute(result, [pod("b")])
        assert "target 3 refused, serving nothing" in conditions_of(st)["Degraded"]["message"]

    def test_failure_with_nothing_to_fall_back_to(self) -> None:
        failure = decide.Failure(Reason.VERSION_LOAD_FAILED, f"pod b: {LOAD_ERROR}")
        st = self.compute(outcome(failure=failure, last_good=None), [pod("b")])
        conds = conditions_of(st)
        assert (conds["Degraded"]["status"], conds["Degraded"]["message"]) == (
            "True",
            f"pod b: {LOAD_ERROR}",
        )
        assert (conds["Ready"]["reason"], conds["Ready"]["message"]) == (
            "VersionLoadFailed",
            f"pod b: {LOAD_ERROR}",
        )

    def test_scaled_to_zero(self) -> None:
        st = self.compute(outcome(complete=True), [], sm=served(replicas=0))
        conds = conditions_of(st)
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("True", "ScaledToZero")
        assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == (
            "False",
            "ScaledToZero",
        )
        assert conds["Degraded"]["status"] == "False"
        assert st["replicasSummary"] == "0/0"

    def test_pods_not_created_names_the_api_servers_refusal(self) -> None:
        refused = 'FailedCreate: pods "mnist-x" is forbidden: violates PodSecurity "restricted"'
        st = decide.compute_status(
            served(),
            outcome(),
            deployment(replica_failure=refused),
            [],
            {},
            [],
            NOW,
        )
        conds = conditions_of(st)
        assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == (
            "True",
            "PodsNotCreated",
        )
        assert conds["Degraded"]["message"].endswith(refused)
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "PodsNotCreated")

    def test_pods_not_created_is_the_cause_behind_a_timeout(self) -> None:
        failure = decide.Failure(Reason.VERSION_LOAD_TIMEOUT, "no new pod running")
        st = decide.compute_status(
            served(),
            outcome(failure=failure, last_good=None),
            deployment(replica_failure="FailedCreate: exceeded quota"),
            [],
            {},
            [],
            NOW,
        )
        assert conditions_of(st)["Degraded"]["reason"] == "PodsNotCreated"

    def test_a_newer_version_failing_under_a_latest_policy_is_degraded(self) -> None:
        """The gate opens on what is AVAILABLE (1); version 2's failure shows in a condition."""
        sm = served(version=None, versionPolicy={"latest": {"numVersions": 1}})
        policy_pod = serving_pod("a", versions="latest:1")
        probes = {
            "a": answered(
                "a",
                version_status(2, ModelState.END, code=3, message=LOAD_ERROR),
                version_status(1, ModelState.AVAILABLE),
            )
        }
        st = self.compute(outcome(complete=True), [policy_pod], probes, sm=sm)
        conds = conditions_of(st)
        assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == (
            "True",
            "VersionLoadFailed",
        )
        assert conds["Degraded"]["message"] == (
            f"model server on pod a: version 2: {LOAD_ERROR} (serving 1)"
        )
        assert conds["Ready"]["status"] == "True"

    def test_unschedulable(self) -> None:
        stuck = pod(
            "b",
            ip="",
            phase="Pending",
            running=False,
            unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )
        st = self.compute(outcome(), [serving_pod("a"), stuck])
        conds = conditions_of(st)
        assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == (
            "True",
            "Unschedulable",
        )
        assert "pod b cannot be scheduled: 0/3 nodes" in conds["Degraded"]["message"]
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "Unschedulable")
        assert conds["Progressing"]["status"] == "True"

    def test_errors_per_replica_and_version(self) -> None:
        probes = {
            "b": answered(
                "b",
                version_status(3, ModelState.END, code=3, message=LOAD_ERROR),
                version_status(2, ModelState.AVAILABLE),
            )
        }
        st = self.compute(outcome(), [pod("b", gate=False, gate_reason=GateReason.FAILED)], probes)
        (entry,) = st["pods"]
        assert entry["gate"] == "VersionLoadFailed"
        assert entry["versions"] == [
            {"version": 3, "state": "END", "errorMessage": LOAD_ERROR},
            {"version": 2, "state": "AVAILABLE"},
        ]

    def test_pods_never_probed_are_pending(self) -> None:
        st = self.compute(outcome(), [pod("b", ip="", phase="Pending", running=False)])
        assert st["pods"] == [{"name": "b", "ready": False, "gate": "Pending"}]

    def test_transition_time_moves_only_when_the_status_flips(self) -> None:
        first = self.compute(outcome(), [serving_pod("a")], now=NOW)
        same = self.compute(outcome(), [serving_pod("a")], previous=first["conditions"], now=LATER)
        assert same["conditions"] == first["conditions"]
        done = self.compute(
            outcome(complete=True, last_good=V3),
            [serving_pod("b", NEW_HASH, "3")],
            previous=first["conditions"],
            now=LATER,
        )
        times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
        assert times == {
            "Ready": LATER,
            "Progressing": LATER,
            "Degraded": NOW,
            "Reconciling": LATER,
            "Stalled": NOW,
        }

    def test_kstatus_pair_tells_in_progress_failed_and_current_apart(self) -> None:
        rolling = conditions_of(self.compute(outcome(), [serving_pod("a")]))
        assert (rolling["Reconciling"]["status"], rolling["Stalled"]["status"]) == ("True", "False")
        done = conditions_of(
            self.compute(outcome(complete=True, last_good=V3), [serving_pod("b", NEW_HASH, "3")])
        )
        assert (done["Reconciling"]["status"], done["Stalled"]["status"]) == ("False", "False")

    def test_invalid_spec_is_stalled_and_keeps_the_rest_of_the_status(self) -> None:
        old = {"servingVersions": "2", "conditions": []}
        st = decide.invalid_status(old, 7, "Deployment x: bad env", NOW)
        conds = conditions_of(st)
        assert st["servingVersions"] == "2" and st["observedGeneration"] == 7
        assert conds["Stalled"]["status"] == "True"
        assert conds["Degraded"]["reason"] == "InvalidSpec"
        assert conds["Ready"]["status"] == "False"

    def test_served_under_a_policy_reports_what_the_servers_say(self) -> None:
        latest = served(version=None, versionPolicy={"latest": {"numVersions": 2}})
        probes = {
            "a": answered(
                "a",
                version_status(5, ModelState.AVAILABLE),
                version_status(4, ModelState.AVAILABLE),
            )
        }
        result = outcome(serve=latest.target, complete=True, last_good=None)
        st = self.compute(result, [serving_pod("a", NEW_HASH, "latest:2")], probes, sm=latest)
        assert (st["servingVersions"], st["targetVersions"]) == ("4,5", "latest:2")


class TestConditionChecks:
    """compute_status's named checks, one rule at a time; first verdict wins."""

    def observed(self, pods: list[PodView] | None = None, **fields: Any) -> decide.Observed:
        return decide.observed_for(served(), outcome(**fields), pods or [], {})

    def test_each_degraded_check_speaks_only_for_its_situation(self) -> None:
        calm = self.observed()
        assert decide.target_refused(calm) is None
        assert decide.rollout_failed(calm) is None
        assert decide.replica_unschedulable(calm) is None
        assert decide.first_verdict(decide.DEGRADED_CHECKS, calm) == decide.AS_EXPECTED

    def test_a_refusal_comes_before_a_failure_and_an_unschedulable_pod(self) -> None:
        stuck = pod("b", unschedulable="0/3 nodes are available")
        failure = decide.Failure(Reason.VERSION_LOAD_TIMEOUT, "too slow")
        both = self.observed([stuck], refused=refusal(), failure=failure)
        verdict = decide.first_verdict(decide.DEGRADED_CHECKS, both)
        assert (verdict.status, verdict.reason) == (True, Reason.VERSION_LOAD_FAILED)
        assert verdict.message.startswith("target 3 refused, serving 3: ")
        failed = decide.first_verdict(
            decide.DEGRADED_CHECKS, self.observed([stuck], failure=failure)
        )
        assert failed == decide.Check(True, Reason.VERSION_LOAD_TIMEOUT, "too slow")
        unplaced = decide.first_verdict(decide.DEGRADED_CHECKS, self.observed([stuck]))
        assert unplaced.reason == Reason.UNSCHEDULABLE

    def test_rollout_checks_in_order(self) -> None:
        assert decide.rollout_done(self.observed(complete=False)) is None
        assert decide.rolled_back(self.observed(complete=True)) is None
        done = decide.first_verdict(decide.ROLLOUT_CHECKS, self.observed(complete=True))
        assert done.progressing.reason == Reason.ROLLOUT_COMPLETE
        assert (done.ready.status, done.ready.reason) == (False, Reason.WAITING_FOR_REPLICAS)
        back = decide.first_verdict(
            decide.ROLLOUT_CHECKS, self.observed(complete=True, refused=refusal(), serve=V2)
        )
        assert back.progressing.reason == Reason.ROLLED_BACK
        going = decide.first_verdict(decide.ROLLOUT_CHECKS, self.observed())
        assert going.progressing == decide.Check(
            True,
            Reason.ROLLING_OUT,
            "rolling out 3: 0/1 new replicas AVAILABLE, serving nothing",
        )

    def test_ready_names_a_degradation_unless_a_refusal_already_does(self) -> None:
        failure = decide.Failure(Reason.VERSION_LOAD_TIMEOUT, "too slow")
        o = self.observed(failure=failure)
        rollout = decide.rolling_out(o)
        degraded = decide.first_verdict(decide.DEGRADED_CHECKS, o)
        assert decide.ready_check(rollout, degraded, o) == decide.Check(
            False, Reason.VERSION_LOAD_TIMEOUT, "too slow"
        )
        refused = self.observed(refused=refusal())
        assert decide.ready_check(rollout, degraded, refused) == rollout.ready


class TestStatusPatch:
    def test_idle_means_no_write(self) -> None:
        probes = {"a": answered("a", version_status(2, ModelState.AVAILABLE))}

        def status_at(previous: list[dict[str, Any]], now: str) -> dict[str, Any]:
            return decide.compute_status(
                served(version=2),
                outcome(serve=V2, config_hash=OLD_HASH, complete=True),
                deployment(OLD_HASH),
                [serving_pod("a")],
                probes,
                previous,
                now,
            )

        first = status_at([], NOW)
        # What the API server stores: the merge patch applied, nulls dropped.
        stored = {k: v for k, v in first.items() if v is not None}
        again = status_at(stored["conditions"], LATER)
        assert decide.status_patch(stored, again) is None

    def test_changed_fields_only(self) -> None:
        old = {"servingVersions": "1", "readyReplicas": 1, "modelName": "m"}
        new = {"servingVersions": "2", "readyReplicas": 1, "modelName": "m"}
        assert decide.status_patch(old, new) == {"servingVersions": "2"}

    def test_none_removes_a_field_that_is_there(self) -> None:
        old = {"refused": {"versions": [3]}, "rollout": None}
        assert decide.status_patch(old, {"refused": None, "rollout": None}) == {"refused": None}

    def test_none_for_an_absent_field_is_no_change(self) -> None:
        assert decide.status_patch({}, {"refused": None}) is None

    def test_fields_no_longer_computed_are_removed(self) -> None:
        assert decide.status_patch({"stale": 1, "kept": 2}, {"kept": 2}) == {"stale": None}

    def test_a_key_dropped_from_a_nested_object_is_nulled(self) -> None:
        # Merge patches merge objects: without the null, "canary" would stay
        # in the stored lastGood and every pass would write again.
        old = {"lastGood": {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}}
        new = {"lastGood": {"versions": [2], "labels": {"stable": 2}}}
        assert decide.status_patch(old, new) == {
            "lastGood": {"versions": [2], "labels": {"stable": 2, "canary": None}}
        }

    def test_lists_are_replaced_whole(self) -> None:
        old = {"pods": [{"name": "a"}, {"name": "b"}]}
        assert decide.status_patch(old, {"pods": [{"name": "b"}]}) == {"pods": [{"name": "b"}]}


# ----- events -----------------------------------------------------------------------


def cond(ctype: str, state: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": state, "reason": reason, "message": message}


SERVING_2 = {
    "servingVersions": "2",
    "conditions": [
        cond(Condition.READY, "True", Reason.AVAILABLE, "1/1 replicas serve 2"),
        cond(Condition.DEGRADED, "False", Reason.AS_EXPECTED),
    ],
}
ROLLING_3 = {
    "servingVersions": "2",
    "targetVersions": "3",
    "rollout": {"versions": [3], "configHash": NEW_HASH, "startTime": NOW},
    "conditions": [
        cond(Condition.READY, "False", Reason.ROLLING_OUT),
        cond(Condition.DEGRADED, "False", Reason.AS_EXPECTED),
    ],
}


def reasons(events: list[decide.EventSpec]) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in events]


class TestEventsFor:
    def test_no_change_no_event(self) -> None:
        assert decide.events_for(SERVING_2, SERVING_2) == []
        assert decide.events_for(ROLLING_3, ROLLING_3) == []

    def test_rollout_started(self) -> None:
        (event,) = decide.events_for(SERVING_2, ROLLING_3)
        assert (event.type, event.reason, event.message) == (
            "Normal",
            "RolloutStarted",
            "rolling out versions 3",
        )

    def test_new_versions_served_and_ready(self) -> None:
        done = {
            "servingVersions": "3",
            "conditions": [
                cond(Condition.READY, "True", Reason.AVAILABLE, "1/1 replicas serve 3"),
                cond(Condition.DEGRADED, "False", Reason.AS_EXPECTED),
            ],
        }
        events = decide.events_for(ROLLING_3, done)
        assert reasons(events) == [("Normal", "ServingVersions"), ("Normal", "Ready")]
        assert events[0].message == "now serving 3 (was 2)"
        assert events[1].message == "1/1 replicas serve 3"

    def test_first_versions_served(self) -> None:
        (event, _) = decide.events_for({}, SERVING_2)
        assert event.message == "now serving 2 (was nothing)"

    def test_refusal_is_a_warning_in_the_servers_words(self) -> None:
        message = f"target 3 refused, serving 2: model server on pod b: version 3: {LOAD_ERROR}"
        refused = {
            "servingVersions": "2",
            "refused": refusal().to_status(),
            "conditions": [
                cond(Condition.READY, "False", Reason.VERSION_LOAD_FAILED),
                cond(Condition.DEGRADED, "True", Reason.VERSION_LOAD_FAILED, message),
            ],
        }
        (event,) = decide.events_for(ROLLING_3, refused)
        assert (event.type, event.reason, event.message) == (
            "Warning",
            "VersionLoadFailed",
            message,
        )
        assert decide.events_for(refused, refused) == []

    def test_rolling_back_after_a_refusal(self) -> None:
        back = {
            **ROLLING_3,
            "rollout": {"versions": [2], "configHash": OLD_HASH, "startTime": NOW},
            "refused": refusal().to_status(),
        }
        events = decide.events_for(ROLLING_3, back)
        assert reasons(events) == [("Normal", "RollingBack"), ("Warning", "VersionLoadFailed")]
        assert events[0].message == "rolling back to versions 2 (target 3 refused)"

    def test_other_degradation_is_a_warning_once(self) -> None:
        stuck = {
            **ROLLING_3,
            "conditions": [
                cond(Condition.READY, "False", Reason.UNSCHEDULABLE, "pod b cannot be scheduled"),
                cond(Condition.DEGRADED, "True", Reason.UNSCHEDULABLE, "pod b cannot be scheduled"),
            ],
        }
        (event,) = decide.events_for(ROLLING_3, stuck)
        assert (event.type, event.reason, event.message) == (
            "Warning",
            "Unschedulable",
            "pod b cannot be scheduled",
        )
        assert decide.events_for(stuck, stuck) == []


def test_parse_time() -> None:
    assert decide.parse_time(NOW) == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert decide.parse_time("2026-03-04T05:06:07.250Z") == datetime(
        2026, 3, 4, 5, 6, 7, 250000, tzinfo=UTC
    )
    assert decide.parse_time("") is None
    assert decide.parse_time("yesterday") is None


def test_format_time_keeps_milliseconds_and_round_trips() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 250999, tzinfo=UTC)
    assert decide.format_time(moment) == "2026-03-04T05:06:07.250Z"
    assert decide.parse_time(decide.format_time(moment)) == moment.replace(microsecond=250000)


def test_condition_messages_are_bounded() -> None:
    made = decide.condition("Degraded", True, "X", "m" * 40000, 1, [], NOW)
    assert len(made["message"]) == 32768


class TestAlreadyValidated:
    """A restart skips the dry run only for a generation the status already accepted."""

    def test_current_generation_without_invalid_spec_is_validated(self) -> None:
        conds = [{"type": "Degraded", "status": "False", "reason": "AsExpected"}]
        assert decide.already_validated({"observedGeneration": 4, "conditions": conds}, 4)

    def test_new_generation_or_invalid_spec_is_not(self) -> None:
        ok = [{"type": "Degraded", "status": "False", "reason": "AsExpected"}]
        bad = [{"type": "Degraded", "status": "True", "reason": "InvalidSpec"}]
        assert not decide.already_validated({"observedGeneration": 3, "conditions": ok}, 4)
        assert not decide.already_validated({"observedGeneration": 4, "conditions": bad}, 4)
        assert not decide.already_validated({}, 4)


# ----- the exact words and limits (each test kills a planted change mutmut made) --------------


class TestLastLines:
    """last_lines keeps whole lines while they fit, counting one newline per line."""

    LOG = "aaaa\nbbbb\ncccc"

    @pytest.mark.parametrize(
        ("limit", "kept"),
        [(9, "cccc"), (10, "bbbb\ncccc"), (14, "bbbb\ncccc"), (15, "aaaa\nbbbb\ncccc")],
    )
    def test_whole_lines_that_fit(self, limit: int, kept: str) -> None:
        assert decide.last_lines(self.LOG, limit) == kept

    def test_blank_lines_and_outer_space_are_dropped(self) -> None:
        assert decide.last_lines("\n  \naaaa\n\nbbbb\n\n", 100) == "aaaa\nbbbb"

    def test_a_last_line_of_exactly_the_limit_is_kept_whole(self) -> None:
        assert decide.last_lines("0123456789", 10) == "0123456789"

    def test_a_longer_last_line_keeps_its_end(self) -> None:
        assert decide.last_lines("0123456789abc", 10) == "...6789abc"
        assert len(decide.last_lines("x" * 50, 10)) == 10


def crashed_pod(message: str, **fields: Any) -> PodView:
    return pod("b", restart_count=1, termination_message=message, **fields)


class TestFailureMessages:
    """The messages a refusal quotes: whose words, and how much of them."""

    def detect(self, pods: list[PodView], seconds: float = 5) -> decide.Failure:
        failure = decide.detect_failure(
            served(), NEW_HASH, pods, {}, START, START + timedelta(seconds=seconds)
        )
        assert failure is not None
        return failure

    def test_a_crash_quotes_600_characters_of_the_log(self) -> None:
        failure = self.detect([crashed_pod("x" * 1000)])
        prefix = "model server on pod b exited while loading: "
        assert failure.message == prefix + "..." + "x" * 597

    def test_out_of_memory_quotes_500_characters(self) -> None:
        failure = self.detect([crashed_pod("x" * 1000, exit_code=137, exit_reason="OOMKilled")])
        prefix = "model server on pod b ran out of memory while loading (OOMKilled): "
        assert failure.message == prefix + "..." + "x" * 497

    def test_a_pull_failure_quotes_600_characters(self) -> None:
        failure = self.detect([failed_pull("y" * 1000, 1)])
        assert failure.message == "model puller model-pull-3 on pod b failed: ..." + "y" * 597

    def test_nothing_to_copy_in_full(self) -> None:
        failure = self.detect([failed_pull("INFO  : There was nothing to transfer", 9)])
        assert failure.message == (
            "model puller model-pull-3 on pod b failed (nothing to copy: the version folder "
            "is missing or empty in the store): INFO  : There was nothing to transfer"
        )

    def test_a_timeout_quotes_300_characters_of_a_restarted_servers_log(self) -> None:
        killed = crashed_pod("z" * 1000, exit_code=137, gate=False, gate_reason="VersionLoading")
        failure = self.detect([killed], seconds=601)
        assert failure.message == (
            "versions 3 not AVAILABLE on every new replica within 600 s "
            f"(b: VersionLoading, restarted 1x, last log: ...{'z' * 297})"
        )

    def test_a_timeout_names_pods_never_probed(self) -> None:
        quiet = pod("b", termination_message="left over from an earlier run")
        failure = self.detect([quiet], seconds=601)
        assert failure.message == (
            "versions 3 not AVAILABLE on every new replica within 600 s (b: not probed)"
        )

    def test_a_timeout_with_no_new_pod_names_no_versions(self) -> None:
        failure = self.detect([serving_pod("a")], seconds=601)
        assert failure.message == (
            "versions ? not AVAILABLE on every new replica within 600 s (no new pod running)"
        )


class TestGateWords:
    def test_policy_lists_every_available_version(self) -> None:
        probe = answered(
            "a", version_status(5, ModelState.AVAILABLE), version_status(4, ModelState.AVAILABLE)
        )
        decision = decide.gate_for(pod("a", versions="latest:2"), probe)
        assert decision == decide.GateDecision("a", True, GateReason.AVAILABLE, "AVAILABLE: 4,5")

    def test_required_versions_are_listed(self) -> None:
        probe = answered(
            "a", version_status(2, ModelState.AVAILABLE), version_status(3, ModelState.AVAILABLE)
        )
        decision = decide.gate_for(pod("a", versions="2,3"), probe)
        assert decision == decide.GateDecision("a", True, GateReason.AVAILABLE, "AVAILABLE: 2,3")

    def test_policy_decisions_name_the_pod(self) -> None:
        failed = answered("a", version_status(5, ModelState.END, code=3, message=LOAD_ERROR))
        loading = answered("a", version_status(5, ModelState.LOADING))
        policy_pod = pod("a", versions="latest")
        assert decide.gate_for(policy_pod, failed) == decide.GateDecision(
            "a", False, GateReason.FAILED, f"version 5: {LOAD_ERROR}"
        )
        assert decide.gate_for(policy_pod, loading) == decide.GateDecision(
            "a", False, GateReason.LOADING, "no version AVAILABLE yet"
        )

    def test_unknown_version_decision_names_the_pod(self) -> None:
        decision = decide.gate_for(pod("a"), answered("a"))
        assert decision == decide.GateDecision(
            "a", False, GateReason.LOADING, "version 3 not yet known to the server"
        )

    def test_by_default_one_uncertain_answer_closes_an_open_gate(self) -> None:
        open_pod = serving_pod("a", NEW_HASH, "3")
        timeout = {"a": probe_error("a", "ProbeTimeout", "slow")}
        closed = decide.GateDecision("a", False, GateReason.TIMEOUT, "slow")
        assert decide.gate_for(open_pod, timeout["a"]) == closed
        assert decide.gate_decisions([open_pod], timeout) == [closed]
        assert decide.gate_changes([open_pod], timeout) == [closed]

    def test_the_failure_count_defaults_to_none_so_far(self) -> None:
        open_pod = serving_pod("a", NEW_HASH, "3")
        timeout = probe_error("a", "ProbeTimeout", "slow")
        held = decide.GateDecision(
            "a", True, GateReason.TIMEOUT, "slow (0 of 3 failures in a row: gate kept open)", True
        )
        assert decide.gate_for(open_pod, timeout, failure_threshold=3) == held
        assert decide.gate_decisions([open_pod], {"a": timeout}, {}, 3) == [held]

    def test_threshold_two_rides_out_one_timeout(self) -> None:
        open_pod = serving_pod("a", NEW_HASH, "3")
        decision = decide.gate_for(open_pod, probe_error("a", "ProbeTimeout"), 1, 2)
        assert (decision.open, decision.held) == (True, True)

    def test_with_gates_follows_the_written_gate(self) -> None:
        """Ready needs both the kubelet's word and the open gate."""
        not_yet_ready = pod("b", gate=False, gate_reason=GateReason.LOADING)
        opening = decide.GateDecision("b", True, GateReason.AVAILABLE, "AVAILABLE: 3")
        (opened,) = decide.with_gates([not_yet_ready], [opening])
        assert (opened.gate, opened.gate_reason, opened.ready) == (
            True,
            GateReason.AVAILABLE,
            False,
        )
        closing = decide.GateDecision("a", False, GateReason.FAILED, "version 3: broken")
        (closed,) = decide.with_gates([serving_pod("a")], [closing])
        assert (closed.gate, closed.gate_reason, closed.ready) == (False, GateReason.FAILED, False)


class TestStatusFields:
    def status(self, sm: spec.ServedModel | None = None, **fields: Any) -> dict[str, Any]:
        return decide.compute_status(
            sm or served(), outcome(**fields), deployment(), [serving_pod("a")], {}, [], NOW
        )

    def test_names_and_endpoints(self) -> None:
        st = self.status(served(modelName="digits"))
        assert st["modelName"] == "digits"
        assert st["selector"] == f"{api.LABEL_SERVEDMODEL}=mnist"
        assert st["endpoints"] == {
            "grpc": "mnist-grpc.ml.svc:8500",
            "headless": "mnist-headless.ml.svc",
            "rest": "http://mnist-rest.ml.svc:8501/v1/models/digits",
        }
        no_rest = self.status(served(ports={"grpc": 9000, "rest": 0}))
        assert no_rest["endpoints"] == {
            "grpc": "mnist-grpc.ml.svc:9000",
            "headless": "mnist-headless.ml.svc",
        }

    @pytest.mark.parametrize(
        "fields",
        [
            {"failure": decide.Failure(Reason.VERSION_LOAD_TIMEOUT, "too slow"), "last_good": None},
            {"refused": refusal()},
        ],
        ids=["failure", "refused"],
    )
    def test_a_failure_or_a_refusal_is_stalled(self, fields: dict[str, Any]) -> None:
        conds = conditions_of(self.status(**fields))
        assert (conds["Stalled"]["status"], conds["Reconciling"]["status"]) == ("True", "False")
        assert conds["Reconciling"]["message"] == "waiting for a spec change"

    def test_status_pods_list_twenty_sorted_by_name(self) -> None:
        pods = [serving_pod(f"p{n:02d}") for n in range(25)]
        st = decide.compute_status(served(), outcome(), deployment(), pods, {}, [], NOW)
        assert [p["name"] for p in st["pods"]] == [f"p{n:02d}" for n in range(20)]

    def test_a_ready_pod_with_a_closed_gate_is_not_ready(self) -> None:
        racing = pod("b", ready=True, gate=False, gate_reason=GateReason.LOADING)
        st = decide.compute_status(served(), outcome(), deployment(), [racing], {}, [], NOW)
        assert st["pods"] == [{"name": "b", "ready": False, "gate": "VersionLoading"}]

    def test_a_version_error_is_cut_at_512_characters(self) -> None:
        long = "e" * 600
        probes = {"b": answered("b", version_status(3, ModelState.END, code=3, message=long))}
        st = decide.compute_status(served(), outcome(), deployment(), [pod("b")], probes, [], NOW)
        assert st["pods"][0]["versions"] == [
            {"version": 3, "state": "END", "errorMessage": "e" * 512}
        ]

    def test_refusal_to_status(self) -> None:
        refused = decide.Refusal((3, 4), (("canary", 4),), "VersionLoadFailed", "m", NOW, "7")
        assert refused.to_status() == {
            "versions": [3, 4],
            "labels": {"canary": 4},
            "reason": "VersionLoadFailed",
            "message": "m",
            "time": NOW,
            "retryToken": "7",
        }


class TestInvalidStatus:
    def test_conditions_in_full_keep_unchanged_transition_times(self) -> None:
        earlier = [
            cond(Condition.READY, "False", Reason.ROLLING_OUT) | {"lastTransitionTime": NOW},
            cond(Condition.PROGRESSING, "False", "X") | {"lastTransitionTime": NOW},
            cond(Condition.DEGRADED, "False", Reason.AS_EXPECTED) | {"lastTransitionTime": NOW},
            cond(Condition.RECONCILING, "False", "X") | {"lastTransitionTime": NOW},
            cond(Condition.STALLED, "False", "X") | {"lastTransitionTime": NOW},
        ]
        st = decide.invalid_status({"conditions": earlier}, 7, "bad env", LATER)

        def made(ctype: str, status: str, message: str, since: str) -> dict[str, Any]:
            return {
                "type": ctype,
                "status": status,
                "reason": "InvalidSpec",
                "message": message,
                "lastTransitionTime": since,
                "observedGeneration": 7,
            }

        assert st["conditions"] == [
            made(Condition.READY, "False", "bad env", NOW),
            made(Condition.PROGRESSING, "False", "bad env", NOW),
            made(Condition.DEGRADED, "True", "bad env", LATER),
            made(Condition.RECONCILING, "False", "waiting for a spec change", NOW),
            made(Condition.STALLED, "True", "bad env", LATER),
        ]

    def test_conditions_that_flip_move_to_now(self) -> None:
        earlier = [
            cond(Condition.READY, "True", Reason.AVAILABLE) | {"lastTransitionTime": NOW},
            cond(Condition.PROGRESSING, "True", Reason.ROLLING_OUT) | {"lastTransitionTime": NOW},
        ]
        st = decide.invalid_status({"conditions": earlier}, 7, "bad env", LATER)
        times = {c["type"]: c["lastTransitionTime"] for c in st["conditions"]}
        assert (times[Condition.READY], times[Condition.PROGRESSING]) == (LATER, LATER)


class TestRolloutClockAndFallback:
    def plan(self, memory: decide.Memory, pods: list[PodView], view: Any) -> decide.Outcome:
        return decide.plan_rollout(
            served(), memory, hash_of, view, pods, {}, START + timedelta(seconds=601)
        )

    def test_the_clock_restarts_for_another_config(self) -> None:
        memory = decide.Memory(last_good=V2, rollout_hash=OLD_HASH, rollout_start=NOW)
        result = self.plan(memory, [pod("b")], deployment(NEW_HASH, updated_replicas=0))
        assert result.rollout_start == decide.format_time(START + timedelta(seconds=601))

    def test_the_clock_restarts_when_no_start_was_recorded(self) -> None:
        memory = decide.Memory(last_good=V2, rollout_hash=NEW_HASH, rollout_start="")
        result = self.plan(memory, [pod("b")], deployment(NEW_HASH, updated_replicas=0))
        assert result.rollout_start == decide.format_time(START + timedelta(seconds=601))

    def test_a_fallback_that_still_serves_is_complete_at_once(self) -> None:
        """No new pod ever came up; the last good set never stopped serving."""
        memory = decide.Memory(last_good=V2, rollout_hash=NEW_HASH, rollout_start=NOW)
        result = self.plan(memory, [serving_pod("a")], deployment(OLD_HASH))
        assert result.refused is not None
        assert result.refused.reason == Reason.VERSION_LOAD_TIMEOUT
        assert (result.serve, result.config_hash, result.complete) == (V2, OLD_HASH, True)
        assert result.rollout_start == decide.format_time(START + timedelta(seconds=601))


class TestChecksInFull:
    """Each condition check's verdict, compared whole."""

    def observed(self, pods: list[PodView] | None = None, **fields: Any) -> decide.Observed:
        return decide.observed_for(served(), outcome(**fields), pods or [], {})

    def test_rolled_back_with_nothing_serving(self) -> None:
        back = decide.rolled_back(self.observed(complete=True, refused=refusal(), serve=V2))
        assert back == decide.Rollout(
            progressing=decide.Check(False, Reason.ROLLED_BACK, "back on 2 after refusing 3"),
            ready=decide.Check(
                False, Reason.VERSION_LOAD_FAILED, "target 3 refused, serving nothing"
            ),
        )

    def test_rolling_out_and_done(self) -> None:
        assert decide.rolling_out(self.observed()).ready == decide.Check(
            False, Reason.ROLLING_OUT, "0/1 replicas serve 3"
        )
        done = decide.rollout_done(self.observed([serving_pod("a", NEW_HASH, "3")], complete=True))
        assert done == decide.Rollout(
            progressing=decide.Check(False, Reason.ROLLOUT_COMPLETE, "serving 3"),
            ready=decide.Check(True, Reason.AVAILABLE, "1/1 replicas serve 3"),
        )

    def test_a_failed_newer_version_under_a_policy_on_any_pod(self) -> None:
        """Pods with explicit versions or no answer are skipped, not the end of the search;
        the newest failed version is named."""
        failing = answered(
            "c",
            version_status(4, ModelState.END, code=3, message="four"),
            version_status(6, ModelState.END, code=3, message="six"),
            version_status(5, ModelState.END, code=3, message="five"),
        )
        pods = [pod("a"), pod("b", versions="latest"), pod("c", versions="latest")]
        o = decide.observed_for(served(), outcome(), pods, {"a": failing, "c": failing})
        assert decide.version_load_failed(o) == decide.Check(
            True,
            Reason.VERSION_LOAD_FAILED,
            "model server on pod c: version 6: six (serving nothing)",
        )


class TestTimesAreUtc:
    """Times written to the status are UTC whatever the operator pod's TZ."""

    @pytest.fixture(autouse=True)
    def local_time_is_not_utc(self, monkeypatch: pytest.MonkeyPatch) -> Any:
        monkeypatch.setenv("TZ", "IST-5:30")  # POSIX form: UTC+5:30, no tz database needed
        time.tzset()
        yield
        monkeypatch.undo()
        time.tzset()

    def test_format_time(self) -> None:
        assert decide.format_time(START) == "2026-03-04T05:06:07.000Z"

    def test_refusal_time(self) -> None:
        memory = decide.Memory(last_good=V2)
        probes = {"b": answered("b", version_status(3, ModelState.END, code=3, message="x"))}
        result = decide.plan_rollout(served(), memory, hash_of, None, [pod("b")], probes, START)
        assert result.refused is not None
        assert result.refused.time == "2026-03-04T05:06:07Z"


def test_refusal_event_without_a_degraded_condition_has_no_message() -> None:
    """A status written by hand (or an older operator) may lack Degraded: no made-up words."""
    new = {"refused": refusal().to_status()}
    assert decide.events_for({}, new) == [decide.EventSpec("Warning", "VersionLoadFailed", "")]


class TestMemoryInFull:
    def test_refused_labels_and_conditions_come_back(self) -> None:
        conditions = [cond(Condition.READY, "False", Reason.VERSION_LOAD_FAILED)]
        refused = decide.Refusal(
            (3,), (("canary", 3), ("stable", 2)), "VersionLoadFailed", "m", NOW
        )
        memory = decide.memory_from_status(
            {
                "refused": refused.to_status() | {"labels": {"stable": "2", "canary": 3}},
                "conditions": conditions,
            }
        )
        assert memory.refused == refused
        assert memory.conditions == tuple(conditions)

    def test_a_refusal_recorded_with_versions_only(self) -> None:
        memory = decide.memory_from_status({"refused": {"versions": [3]}})
        assert memory.refused == decide.Refusal((3,), (), "", "", "", "")


class TestConditionWords:
    def observed(self, pods: list[PodView] | None = None, **fields: Any) -> decide.Observed:
        return decide.observed_for(served(), outcome(**fields), pods or [], {})

    def test_scaled_to_zero_in_full(self) -> None:
        o = decide.observed_for(served(replicas=0), outcome(complete=True), [], {})
        assert decide.scaled_to_zero(o) == decide.Rollout(
            progressing=decide.Check(False, Reason.SCALED_TO_ZERO, "replicas is 0"),
            ready=decide.Check(True, Reason.SCALED_TO_ZERO, "replicas is 0: nothing to serve"),
        )

    def test_done_with_nothing_serving(self) -> None:
        done = decide.rollout_done(self.observed(complete=True))
        assert done is not None
        assert done.ready == decide.Check(
            False, Reason.WAITING_FOR_REPLICAS, "0/1 replicas serve nothing"
        )

    def test_a_chain_without_a_catch_all_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError) as caught:
            decide.first_verdict([decide.target_refused], self.observed())
        assert str(caught.value) == "no check applied: the chain must end with a catch-all"

    def test_explicit_versions_are_what_the_pod_was_started_for(self) -> None:
        """Not what else its server happens to have AVAILABLE."""
        probes = {
            "a": answered(
                "a",
                version_status(2, ModelState.AVAILABLE),
                version_status(3, ModelState.AVAILABLE),
            )
        }
        assert decide.serving_versions([serving_pod("a", NEW_HASH, "3")], probes) == "3"


class TestKstatusInFull:
    def conds(self, **fields: Any) -> dict[str, dict[str, Any]]:
        pods = [serving_pod("b", NEW_HASH, "3")]
        return conditions_of(
            decide.compute_status(served(), outcome(**fields), deployment(), pods, {}, [], NOW)
        )

    def test_stalled_names_the_degradation(self) -> None:
        failure = decide.Failure(Reason.VERSION_LOAD_TIMEOUT, "too slow")
        conds = self.conds(failure=failure, last_good=None)
        assert {k: conds[k] for k in ("Reconciling", "Stalled")} == {
            "Reconciling": {
                "type": "Reconciling",
                "status": "False",
                "reason": Reason.VERSION_LOAD_TIMEOUT,
                "message": "waiting for a spec change",
                "lastTransitionTime": NOW,
                "observedGeneration": 4,
            },
            "Stalled": {
                "type": "Stalled",
                "status": "True",
                "reason": Reason.VERSION_LOAD_TIMEOUT,
                "message": "too slow",
                "lastTransitionTime": NOW,
                "observedGeneration": 4,
            },
        }

    def test_reconciling_follows_ready(self) -> None:
        done = self.conds(complete=True, last_good=V3)["Reconciling"]
        assert (done["status"], done["reason"], done["message"]) == (
            "False",
            Reason.AVAILABLE,
            "",
        )
        going = self.conds()["Reconciling"]
        assert (going["status"], going["reason"], going["message"]) == (
            "True",
            Reason.ROLLING_OUT,
            "1/1 replicas serve 3",
        )


class TestMoreFailureEdges:
    def test_the_deadline_itself_is_not_yet_late(self) -> None:
        at = decide.detect_failure(
            served(), NEW_HASH, [pod("b")], {}, START, START + timedelta(seconds=600)
        )
        assert at is None

    def test_every_new_pod_is_described(self) -> None:
        failure = decide.detect_failure(
            served(replicas=2),
            NEW_HASH,
            [pod("b", gate=False, gate_reason=GateReason.LOADING), pod("c")],
            {},
            START,
            START + timedelta(seconds=601),
        )
        assert failure is not None
        assert failure.message.endswith("(b: VersionLoading; c: not probed)")

    def test_a_pull_failure_behind_a_closed_gate_counts(self) -> None:
        closed = replace(failed_pull("denied", 1), gate=False, gate_reason=GateReason.LOADING)
        failure = decide.detect_failure(served(), NEW_HASH, [closed], {}, START, START)
        assert failure is not None
        assert failure.reason == Reason.MODEL_PULL_FAILED

    def test_already_validated_without_a_degraded_condition(self) -> None:
        conds = [{"type": "Ready", "status": "True", "reason": "VersionsAvailable"}]
        assert decide.already_validated({"observedGeneration": 4, "conditions": conds}, 4)


class TestEventWords:
    def test_rollout_of_several_versions(self) -> None:
        new = {**ROLLING_3, "rollout": {"versions": [2, 3], "configHash": "h", "startTime": NOW}}
        (event,) = decide.events_for(SERVING_2, new)
        assert event.message == "rolling out versions 2,3"

    def test_rollout_of_a_policy_names_the_target(self) -> None:
        new = {
            **ROLLING_3,
            "rollout": {"versions": [], "configHash": "h"},
            "targetVersions": "latest:2",
        }
        (event,) = decide.events_for(SERVING_2, new)
        assert event.message == "rolling out versions latest:2"

    def test_conditions_without_messages_make_events_without_words(self) -> None:
        new = {
            "conditions": [
                {"type": Condition.READY, "status": "True", "reason": Reason.AVAILABLE},
                {"type": Condition.DEGRADED, "status": "True", "reason": Reason.UNSCHEDULABLE},
            ]
        }
        assert decide.events_for({}, new) == [
            decide.EventSpec("Warning", Reason.UNSCHEDULABLE, ""),
            decide.EventSpec("Normal", Reason.READY, ""),
        ]


class TestCanaryWords:
    """decide's part of a canary: the Progressing/Ready verdict, status.canary, the Events."""

    STATUS: ClassVar[dict[str, Any]] = {
        "versions": [3, 4],
        "step": 1,
        "steps": 2,
        "phase": "Analysing",
        "share": "1 of 4 endpoints",
        "lastAnalysis": {"step": 1, "verdict": "Pass", "message": "canary 0/40 failed"},
    }
    LINE = (
        "canary 3,4: step 1/2 Analysing, 1 of 4 endpoints; "
        "last analysis (step 1): Pass: canary 0/40 failed"
    )

    def observed(self, status: dict[str, Any] | None, **fields: Any) -> decide.Observed:
        return decide.observed_for(
            served(replicas=2), outcome(canary=status, **fields), [serving_pod("a")], {}
        )

    def test_a_running_canary_is_progressing_and_not_yet_ready(self) -> None:
        assert decide.canary_running(self.observed(self.STATUS)) == decide.Rollout(
            progressing=decide.Check(True, Reason.CANARY_ANALYSIS, self.LINE),
            ready=decide.Check(
                False, Reason.CANARY_ANALYSIS, f"1/2 stable replicas ready; {self.LINE}"
            ),
        )

    def test_a_promoted_canary_and_one_without_an_analysis_yet(self) -> None:
        promoted = {**self.STATUS, "phase": "Promoted"}
        del promoted["lastAnalysis"]
        verdict = decide.canary_running(self.observed(promoted))
        assert verdict is not None
        assert verdict.progressing == decide.Check(
            True, Reason.CANARY_PROMOTED, "canary 3,4: step 1/2 Promoted, 1 of 4 endpoints"
        )

    def test_no_canary_or_a_refused_one_is_another_checks_business(self) -> None:
        assert decide.canary_running(self.observed(None)) is None
        assert decide.canary_running(self.observed({})) is None
        assert decide.canary_running(self.observed(self.STATUS, refused=refusal())) is None

    def test_status_carries_a_copy_of_the_canary(self) -> None:
        result = outcome(canary=self.STATUS)
        st = decide.compute_status(served(), result, deployment(), [], {}, [], NOW)
        assert st["canary"] == self.STATUS and st["canary"] is not self.STATUS
        quiet = decide.compute_status(served(), outcome(), deployment(), [], {}, [], NOW)
        assert quiet["canary"] is None

    def test_events_in_full(self) -> None:
        first = {"canary": {"versions": [3, 4], "steps": 2, "step": 1}}
        assert decide.events_for({}, first) == [
            decide.EventSpec(
                "Normal", Reason.CANARY_STARTED, "canary 3,4 started beside the last good versions"
            )
        ]
        passed = {"canary": self.STATUS}
        assert decide.events_for(first, passed) == [
            decide.EventSpec(
                "Normal", Reason.CANARY_ANALYSED, "canary 3,4 passed step 1/2: canary 0/40 failed"
            )
        ]
        failed = {
            "canary": {
                **self.STATUS,
                "lastAnalysis": {**self.STATUS["lastAnalysis"], "verdict": "Fail"},
            }
        }
        assert decide.events_for(first, failed) == []
        assert decide.events_for(passed, {}) == []
