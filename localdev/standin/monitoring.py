"""The model server's Prometheus page, from the requests the stand-in really serves.

What the real server (2.20.0) exports, and where it says so:

* ``--monitoring_config_file`` holds a text ``MonitoringConfig``
  (config/monitoring_config.proto); the page exists only with
  ``prometheus_config { enable: true }``, at its ``path`` or else
  ``/monitoring/prometheus/metrics`` (``PrometheusExporter::kPrometheusPath``,
  util/prometheus_exporter.cc), on the REST port (model_servers/http_server.cc,
  ``CreateAndStartHttpServer``), answered as ``text/plain``.
* ``/tensorflow/serving/request_count`` (labels ``model_name``, ``status``):
  one per Predict/Classify/Regress gRPC call (prediction_service_impl.cc) and
  per REST request through the ``/v1/`` dispatcher (http_server.cc), with the
  status code's name (``OK``, ``INVALID_ARGUMENT``, ...;
  servables/tensorflow/util.cc, ``RecordModelRequestCount``).
* ``/tensorflow/serving/request_latency`` (labels ``model_name``, ``API``,
  ``entrypoint``): a histogram of microseconds, for *successful* requests only
  (``RecordRequestLatency`` is called under ``status.ok()``), API ``Predict``/
  ``Classify``/``Regress`` and entrypoint ``GRPC``, or the REST method
  (``predict``...) and ``REST``. Buckets ``Exponential(10, 1.8, 33)``: limits
  10 x 1.8^i for i < 33, then one more up to DBL_MAX; a value counts in the
  first bucket whose limit is above it (TensorFlow's Histogram::Add).
* Names: every character outside ``[a-zA-Z0-9_]`` becomes ``:``
  (``:tensorflow:serving:request_count``); histograms print cumulative
  ``_bucket{...,le="<limit>"}`` lines (the last ``le="+Inf"``), then ``_sum``
  and ``_count``; numbers as ``absl::StrCat`` prints a double (6 significant
  digits) (util/prometheus_exporter.cc).

The real page carries many more metrics (TensorFlow's own); only these two
are emulated.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import Message

DEFAULT_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
# monitoring::Buckets::Exponential(10, 1.8, 33)
BUCKET_LIMITS: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))


def _monitoring_config_class() -> type[Message]:
    """MonitoringConfig as config/monitoring_config.proto declares it (the
    tensorflow-serving-api package does not ship that file)."""
    fdp = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="standin/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=fdp.TYPE_BOOL, label=fdp.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=fdp.TYPE_STRING, label=fdp.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=fdp.TYPE_MESSAGE,
        label=fdp.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )


MonitoringConfig = _monitoring_config_class()


def prometheus_path(config_text: str) -> str | None:
    """The metrics page's path from a MonitoringConfig text, None when disabled.

    Raises ``text_format.ParseError`` on a file the real server would refuse.
    """
    config = text_format.Parse(config_text, MonitoringConfig())
    prometheus = config.prometheus_config  # type: ignore[attr-defined]
    if not prometheus.enable:
        return None
    return str(prometheus.path) or DEFAULT_PATH


def _number(value: float) -> str:
    """A double as absl::StrCat writes it (six significant digits, %g)."""
    return f"{value:.6g}"


def _prom_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else ":" for c in name)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return ",".join(f'{k}="{escape(v)}"' for k, v in pairs)


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKET_LIMITS) + 1))
    total: float = 0.0

    def add(self, value: float) -> None:
        self.buckets[bisect.bisect_right(BUCKET_LIMITS, value)] += 1
        self.total += value


class ServingMetrics:
    """The serving metrics of one model server process (one pod's run)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self._latency: dict[tuple[tuple[str, str], ...], _Histogram] = {}

    def record(
        self, model_name: str, status: str, api: str, entrypoint: str, micros: float
    ) -> None:
        """One request answered with `status` (a status code's name)."""
        with self._lock:
            self._counts[(("model_name", model_name), ("status", status))] += 1
            if status == "OK":
                key = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
                self._latency.setdefault(key, _Histogram()).add(micros)

    def page(self) -> str:
        """The Prometheus text page, as PrometheusExporter::GeneratePage builds it."""
        lines: list[str] = []
        with self._lock:
            # The collection registry is a map ordered by the metrics' names.
            name = _prom_name(REQUEST_COUNT)
            lines.append(f"# TYPE {name} counter")
            lines += [f"{name}{{{_labels(k)}}} {v}" for k, v in self._counts.items()]
            name = _prom_name(REQUEST_LATENCY)
            lines.append(f"# TYPE {name} histogram")
            for key, hist in self._latency.items():
                prefix = f"{name}_bucket{{{_labels(key)},"
                cumulative = 0
                for i, count in enumerate(hist.buckets):
                    cumulative += count
                    limit = _number(BUCKET_LIMITS[i]) if i < len(BUCKET_LIMITS) else "+Inf"
                    lines.append(f'{prefix}le="{limit}"}} {cumulative}')
                lines.append(f"{name}_sum{{{_labels(key)}}} {_number(hist.total)}")
                lines.append(f"{name}_count{{{_labels(key)}}} {cumulative}")
        return "\n".join(lines) + "\n"
