"""The stand-in's fault modes, seen through the operator's own gRPC client.

Each mode must fail a probe the way a broken real server would, and the
operator's client must name it: hang and slow -> ProbeTimeout within the
timeout, garbage -> ProbeFailed, vanish -> ServerUnreachable. Clearing the
annotation heals the pod. No cluster: one pod server on 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from localdev.standin.faults import FAULT_ANNOTATION, parse_fault
from localdev.standin.models import configure_tensorflow
from localdev.standin.paths import NoCluster
from localdev.standin.server import PodServer, Runtime, serving_spec_from_pod
from tests.tooling.standin.helpers import (
    LoopThread,
    add_version,
    models_config,
    pod_dict,
    save_half_plus_three,
    wait_until,
)
from tfserving_operator.wire.client import (
    ProbeFailed,
    ProbeTimeout,
    ServerUnreachable,
    VersionStatus,
    get_model_status,
)

pytestmark = pytest.mark.tensorflow
PROBE_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    configure_tensorflow(2)
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    rt = Runtime.create(load_threads=1, infer_threads=1)
    yield rt
    rt.shutdown()


@pytest.fixture
def server(loop: LoopThread, runtime: Runtime, tmp_path: Path) -> Iterator[PodServer]:
    """One pod server with version 1 AVAILABLE, no fault yet."""
    template = save_half_plus_three(tmp_path / "template")
    models = tmp_path / "models" / "hpt"
    add_version(models, 1, template)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "models.config").write_text(
        models_config(
            '    name: "hpt"\n    base_path: "/models/hpt"\n    model_platform: "tensorflow"'
        )
    )
    pod = pod_dict(
        args=[
            "--port=8500",
            "--rest_api_port=8501",
            "--model_config_file=/etc/tfserving/models.config",
        ],
        volumes=[
            {"name": "models", "hostPath": {"path": str(tmp_path / "models")}},
            {"name": "config", "hostPath": {"path": str(config_dir)}},
        ],
        mounts=[
            {"name": "models", "mountPath": "/models", "readOnly": True},
            {"name": "config", "mountPath": "/etc/tfserving"},
        ],
    )
    srv = PodServer(
        serving_spec_from_pod(pod, NoCluster()), runtime, host="127.0.0.1", grpc_port=0, rest_port=0
    )
    loop.run(srv.start())
    wait_until(lambda: _probe(loop, srv, timeout=2.0)[0].available, what="version 1 AVAILABLE")
    yield srv
    loop.run(srv.stop())


def _probe(loop: LoopThread, srv: PodServer, timeout: float = PROBE_TIMEOUT) -> list[VersionStatus]:
    target = f"127.0.0.1:{srv.grpc_port}"
    return loop.run(get_model_status(target, "hpt", timeout=timeout), timeout=timeout + 10)


def _set_fault(srv: PodServer, value: str | None) -> None:
    annotations = dict(srv.spec.annotations)
    annotations.pop(FAULT_ANNOTATION, None)
    if value is not None:
        annotations[FAULT_ANNOTATION] = value
    srv.update_annotations(annotations)


def test_parse_fault_accepts_the_five_modes_and_refuses_typos() -> None:
    assert parse_fault("hang").kind == "hang"
    assert parse_fault(" garbage ").kind == "garbage"
    assert parse_fault("vanish").vanish
    slow = parse_fault("slow=2.5")
    assert (slow.kind, slow.seconds) == ("slow", 2.5)
    slow_predict = parse_fault("slow-predict=1")
    assert (slow_predict.kind, slow_predict.describe()) == ("slow-predict", "slow-predict=1")
    assert parse_fault(None).kind == parse_fault("").kind == ""
    for bad in ("hung", "slow", "slow=-1", "slow=abc", "slow-predict", "slowpredict=1"):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_hang_times_out_within_the_probe_timeout(loop: LoopThread, server: PodServer) -> None:
    _set_fault(server, "hang")
    started = time.monotonic()
    with pytest.raises(ProbeTimeout):
        _probe(loop, server)
    elapsed = time.monotonic() - started
    # The client's deadline, not the server, ends the call (the guard adds 1 s at most).
    assert elapsed < PROBE_TIMEOUT + 1.0, elapsed
    _set_fault(server, None)
    assert _probe(loop, server)[0].available


def test_garbage_is_a_failed_probe_not_a_crash(loop: LoopThread, server: PodServer) -> None:
    _set_fault(server, "garbage")
    with pytest.raises(ProbeFailed, match="does not parse"):
        _probe(loop, server)
    _set_fault(server, None)
    assert _probe(loop, server)[0].available


def test_slow_answers_after_the_delay(loop: LoopThread, server: PodServer) -> None:
    _set_fault(server, "slow=1.5")
    with pytest.raises(ProbeTimeout):
        _probe(loop, server)
    started = time.monotonic()
    statuses = _probe(loop, server, timeout=5.0)
    assert statuses[0].available
    assert time.monotonic() - started >= 1.4


def test_vanish_closes_the_port_and_clearing_it_reopens(
    loop: LoopThread, server: PodServer
) -> None:
    port = server.grpc_port
    _set_fault(server, "vanish")
    wait_until(lambda: not server.listening, what="listeners closed")
    with pytest.raises(ServerUnreachable):
        _probe(loop, server)
    _set_fault(server, None)
    wait_until(lambda: server.listening, what="listeners open again")
    assert server.grpc_port == port
    wait_until(lambda: _probe(loop, server, timeout=2.0)[0].available, what="answers again")


def test_prediction_is_untouched_by_a_model_service_fault(
    loop: LoopThread, server: PodServer
) -> None:
    import json
    import urllib.request

    _set_fault(server, "hang")
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/hpt:predict",
        data=json.dumps({"instances": [1.0, 2.0]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["predictions"] == [3.5, 4.0]
