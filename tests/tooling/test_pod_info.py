"""pod_info (localdev/support/clients.py): what the tests' pod watcher reads from a Pod."""

from __future__ import annotations

from typing import Any

from localdev.support.clients import pod_info
from tfserving_operator import api

MESSAGE = "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available"


def server_pod(**container_status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m-1", "annotations": {api.ANNOTATION_VERSIONS: "3"}},
        "status": {
            "phase": "Running",
            "podIP": "127.1.0.9",
            "containerStatuses": [
                {"name": "puller", "state": {"terminated": {"exitCode": 0}}},
                {"name": api.CONTAINER_NAME, "restartCount": 0, **container_status},
            ],
        },
    }


def test_a_server_that_just_exited_is_read_from_its_state() -> None:
    info = pod_info(server_pod(state={"terminated": {"exitCode": 255, "message": MESSAGE}}))
    assert (info.exit_code, info.exit_message) == (255, MESSAGE)


def test_a_restarted_server_is_read_from_its_last_state() -> None:
    info = pod_info(
        server_pod(
            state={"running": {}},
            lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            restartCount=1,
        )
    )
    assert (info.exit_code, info.exit_message) == (137, "")


def test_a_running_server_never_exited_and_other_containers_do_not_count() -> None:
    info = pod_info(server_pod(state={"running": {}}))
    assert (info.exit_code, info.exit_message) == (None, "")
    assert (info.name, info.versions, info.target) == ("m-1", "3", "127.1.0.9:8500")
