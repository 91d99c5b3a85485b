"""Observe: read model servers' own Prometheus pages, for the canary analysis.

TF Serving exports its metrics on the REST port when --monitoring_config_file
enables Prometheus (tensorflow_serving/model_servers/http_server.cc,
``CreateAndStartHttpServer``; default path ``/monitoring/prometheus/metrics``,
util/prometheus_exporter.cc). Two of them judge a canary
(tensorflow_serving/servables/tensorflow/util.cc):

* ``:tensorflow:serving:request_count{model_name, status}``: every Predict,
  Classify and Regress call and every REST request, by status code name;
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``: a
  histogram of microseconds (buckets 10 x 1.8^i), successful requests only.

Names become Prometheus names by turning every character outside
``[a-zA-Z0-9_]`` into ``:`` (util/prometheus_exporter.cc). The page is parsed
with prometheus_client's parser; the readings go out as plain values
(views.ServingCounts) for the pure analysis (canary.py).
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from tfserving_operator.views import PodView, ServingCounts

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
TIMEOUT_SECONDS = 5.0
# A page holds TensorFlow's own metrics too; a bound keeps a broken or
# hostile endpoint from costing the operator memory.
MAX_PAGE_BYTES = 8 << 20


def parse_page(pod: str, text: str, model_name: str) -> ServingCounts:
    """The serving counts of `model_name` on one page."""
    requests = errors = 0
    buckets: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUEST_COUNT:
            for sample in family.samples:
                if sample.labels.get("model_name") != model_name:
                    continue
                requests += int(sample.value)
                if sample.labels.get("status") != "OK":
                    errors += int(sample.value)
        elif family.name == REQUEST_LATENCY:
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                if sample.labels.get("model_name") != model_name:
                    continue
                le = sample.labels.get("le", "")
                buckets[le] = buckets.get(le, 0) + int(sample.value)
    return ServingCounts(
        pod=pod, requests=requests, errors=errors, latency_buckets=tuple(buckets.items())
    )


def _get(url: str, timeout: float) -> str:
    # The operator's own dependency set has no async HTTP client; a thread per
    # read is fine for the handful of pods one analysis reads.
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read(MAX_PAGE_BYTES).decode("utf-8", "replace"))


async def read(pod: PodView, model_name: str, timeout: float = TIMEOUT_SECONDS) -> ServingCounts:
    """One pod's reading, or why there is none."""
    url = pod.metrics_url
    if not url:
        return ServingCounts(pod.name, error="monitoring is off on this pod")
    try:
        text = await asyncio.to_thread(_get, url, timeout)
        return parse_page(pod.name, text, model_name)
    except (OSError, urllib.error.URLError, ValueError) as err:
        return ServingCounts(pod.name, error=f"{url}: {err}")


async def read_all(
    pods: Iterable[PodView], model_name: str, timeout: float = TIMEOUT_SECONDS
) -> dict[str, ServingCounts]:
    """Read several pods at once."""
    results = await asyncio.gather(*(read(p, model_name, timeout) for p in pods))
    return {r.pod: r for r in results}
