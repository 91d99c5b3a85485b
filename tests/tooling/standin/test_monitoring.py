"""The Prometheus page: the real server's names, labels and buckets, from served requests."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localdev.standin.monitoring import BUCKET_LIMITS, DEFAULT_PATH

from .conftest import Served, StartFn
from .helpers import models_config, wait_until
from .test_requests import DEMO, predict_request

pytestmark = pytest.mark.tensorflow

MONITORING = "prometheus_config {\n  enable: true\n}\n"


def _page(served: Served, path: str = DEFAULT_PATH) -> dict[str, dict[tuple[str, ...], float]]:
    with urllib.request.urlopen(served.rest_url + path, timeout=10) as response:
        assert response.headers.get_content_type() == "text/plain"
        text = response.read().decode()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = tuple(f"{k}={v}" for k, v in sorted(labels.items()))
            if "le" in sample.labels:
                key += (f"le={sample.labels['le']}",)
            # The parser names counter samples <name>_total; the page does not.
            name = family.name if family.type == "counter" else sample.name
            out.setdefault(name, {})[key] = sample.value
    return out


def test_page_counts_requests_by_status_and_latency_of_ok_ones(
    serve: StartFn, tmp_path: Path
) -> None:
    config = tmp_path / "config-demo-0"
    config.mkdir(parents=True, exist_ok=True)
    (config / "monitoring.config").write_text(MONITORING)
    served = serve(
        models_config(DEMO),
        versions={"demo": [1]},
        extra_args=("--monitoring_config_file=/etc/tfserving/monitoring.config",),
    )
    wait_until(lambda: served.states("demo") == {1: "AVAILABLE"}, what="v1 up")
    for _ in range(3):
        served.predictions.Predict(predict_request(), timeout=10)
    with pytest.raises(grpc.RpcError):
        served.predictions.Predict(predict_request(version=7), timeout=10)
    status, _ = served.rest("POST", "/v1/models/demo:predict", {"instances": [1.0]})
    assert status == 200

    page = _page(served)
    counts = page[":tensorflow:serving:request_count"]
    assert counts[("model_name=demo", "status=OK")] == 4
    assert counts[("model_name=demo", "status=NOT_FOUND")] == 1
    grpc_latency = ("API=Predict", "entrypoint=GRPC", "model_name=demo")
    assert page[":tensorflow:serving:request_latency_count"][grpc_latency] == 3
    rest_latency = ("API=predict", "entrypoint=REST", "model_name=demo")
    assert page[":tensorflow:serving:request_latency_count"][rest_latency] == 1
    buckets = page[":tensorflow:serving:request_latency_bucket"]
    limits = sorted({k[-1] for k in buckets if k[:3] == grpc_latency})
    assert len(limits) == len(BUCKET_LIMITS) + 1  # 33 limits and +Inf
    assert buckets[(*grpc_latency, "le=10")] == 0  # nothing answers in 10 us
    assert buckets[(*grpc_latency, "le=+Inf")] == 3


def test_no_page_without_monitoring_config(serve: StartFn) -> None:
    served = serve(models_config(DEMO), versions={"demo": [1]})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(served.rest_url + DEFAULT_PATH, timeout=10)
    assert caught.value.code == 404


def test_slow_version_fault_shows_in_latency(serve: StartFn, tmp_path: Path) -> None:
    config = tmp_path / "config-demo-0"
    config.mkdir(parents=True, exist_ok=True)
    (config / "monitoring.config").write_text(MONITORING)
    served = serve(
        models_config(DEMO),
        versions={"demo": [1]},
        annotations={"standin.tests.tfoperator.dev/fault": "slow-version=1:0.3"},
        extra_args=("--monitoring_config_file=/etc/tfserving/monitoring.config",),
    )
    served.predictions.Predict(predict_request(), timeout=10)
    page = _page(served)
    key = ("API=Predict", "entrypoint=GRPC", "model_name=demo")
    assert page[":tensorflow:serving:request_latency_sum"][key] >= 300_000  # microseconds
