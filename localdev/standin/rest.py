"""The REST API of one pod (``--rest_api_port``), on aiohttp.

Paths, JSON shapes, error texts and HTTP codes follow the real server:

* ``GET /v1/models/NAME[/versions/N | /labels/L][/metadata]``: the model
  status (200 with the version list even when nothing is AVAILABLE; a label
  does not narrow it, as in the real server) or the version's signature
  metadata;
* ``POST /v1/models/NAME[/versions/N | /labels/L]:(predict|classify|regress)``
  with the row (``instances``) or columnar (``inputs``) format;
* errors as ``{"error": "..."}`` with the status code's HTTP mapping;
  ``Malformed request: METHOD PATH`` (400) for other ``/v1/`` paths, a bare 404
  for everything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from .errors import ServingError, invalid_argument
from .faults import NO_FAULT, Fault
from .grpc_service import SIGNATURE_DEF_FIELD, fill_model_status, model_metadata
from .models import DEFAULT_SIGNATURE, LoadedModel
from .monitoring import ServingMetrics
from .tensors import (
    decode_b64_object,
    dumps,
    format_float,
    is_b64_object,
    json_text,
    json_to_ndarray,
    json_type_name,
    ndarray_to_json,
)
from .versions import VersionManager

log = logging.getLogger(__name__)

_V1 = re.compile(r"/v1/.*", re.IGNORECASE)
_PREDICT = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = (1 << 63) - 1


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(body) + "\n", status=status, content_type="application/json")


def _proto_json(message: Message) -> Any:
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
    )


def _parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > _INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return value


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_text(doc)} Is not object")
    return doc


def _signature_name(doc: dict[str, Any]) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_text(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _element_error(index: int, key: str | None, error: ServingError) -> ServingError:
    where = f"{index} key: {key}" if key is not None else f"{index}"
    return invalid_argument(
        f"Failed to process element: {where} of 'instances' list. "
        f"Error: {error.code.name}: {error.message}"
    )


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances_to_inputs(instances: Any, infos: Any) -> dict[str, np.ndarray]:
    """Row format: one element per batch row, objects when there are several inputs."""
    first = instances[0]
    if not isinstance(first, dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = isinstance(first, dict) and not is_b64_object(first)
    names = sorted(infos)
    rows: dict[str, list[np.ndarray]] = {}

    def add(index: int, key: str | None, name: str, value: Any) -> None:
        if name not in infos:
            raise _element_error(
                index, key, invalid_argument(f"JSON object: does not have named input: {name}")
            )
        try:
            array = json_to_ndarray(value, infos[name].dtype)
        except ServingError as e:
            raise _element_error(index, key, e) from None
        seen = rows.setdefault(name, [])
        if seen and seen[0].shape != array.shape:
            if seen[0].size != array.size:
                problem = f"Expecting tensor size: {seen[0].size} but got: {array.size}"
            else:
                problem = (
                    f"Expecting shape {_shape_text(seen[0].shape)} "
                    f"but got: {_shape_text(array.shape)}"
                )
            raise _element_error(index, key, invalid_argument(problem))
        seen.append(array)

    for index, element in enumerate(instances):
        element_is_object = isinstance(element, dict) and not is_b64_object(element)
        if objects:
            if not element_is_object:
                raise invalid_argument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for key, value in element.items():
                add(index, key, key, value)
            if set(element) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{json_text(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if element_is_object:
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            add(index, None, names[0], element)
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _columnar_to_inputs(value: Any, infos: Any) -> dict[str, np.ndarray]:
    """Columnar format: one value (single input) or an object of named values."""
    if not isinstance(value, dict) or is_b64_object(value):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        (name,) = infos
        return {name: json_to_ndarray(value, infos[name].dtype)}
    inputs: dict[str, np.ndarray] = {}
    for name in sorted(infos):
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        inputs[name] = json_to_ndarray(value[name], infos[name].dtype)
    return inputs


def _predict_inputs(
    doc: dict[str, Any], model: LoadedModel, signature_name: str
) -> tuple[dict[str, np.ndarray], bool]:
    """The request's tensors, and whether it used the row format."""
    signature = signature_name or DEFAULT_SIGNATURE
    if signature not in model.signature_defs:
        raise invalid_argument(f'Serving signature name: "{signature}" not found in signature def')
    infos = model.signature_defs[signature].inputs
    if not infos:
        raise invalid_argument(
            f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
        )
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            f"JSON Value: {json_text(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(
                f"JSON Value: {json_text(doc)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(f"JSON Value: {json_text(doc)} No values in 'instances' array")
        return _instances_to_inputs(instances, infos), True
    if has_inputs:
        return _columnar_to_inputs(doc["inputs"], infos), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _predict_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if not row_format:
        columns = {
            n: ndarray_to_json(outputs[n], outputs[n].dtype.kind == "O" and n.endswith("_bytes"))
            for n in names
        }
        return {"outputs": columns[names[0]] if len(names) == 1 else columns}
    batch = -1
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    per_output = {
        n: ndarray_to_json(outputs[n], outputs[n].dtype.kind == "O" and n.endswith("_bytes"))
        for n in names
    }
    if len(names) == 1:
        return {"predictions": per_output[names[0]]}
    return {"predictions": [{n: per_output[n][i] for n in names} for i in range(batch)]}


def _feature_kind_error(name: str, feature: feature_pb2.Feature) -> ServingError:
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN"
    )
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_feature_value(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    kind = feature.WhichOneof("kind")

    def need(wanted: str) -> None:
        if kind not in (None, wanted):
            raise _feature_kind_error(name, feature)

    if (
        value is None
        or isinstance(value, list)
        or (isinstance(value, dict) and not is_b64_object(value))
    ):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}"
        )
    if isinstance(value, bool):
        need("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        need("bytes_list")
        feature.bytes_list.value.append(decode_b64_object(value))
    elif isinstance(value, str):
        need("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float):
        need("float_list")
        feature.float_list.value.append(value)
    else:
        need("int64_list")
        if value > _INT64_MAX:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(value)


def _example_from_json(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


def _serialized_examples(doc: dict[str, Any]) -> list[bytes]:
    context = _example_from_json(doc["context"]).SerializeToString() if "context" in doc else b""
    examples = doc.get("examples")
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {json_text(doc)} When method is classify, key 'examples' is "
            "expected and was not found"
        )
    if not isinstance(examples, list):
        raise invalid_argument(
            f"JSON Value: {json_text(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {json_text(doc)} 'examples' value is an empty array")
    return [context + _example_from_json(e).SerializeToString() for e in examples]


class RestApi:
    """Request handling of one pod's REST port."""

    def __init__(
        self,
        manager: VersionManager,
        executor: Executor,
        num_threads: int = 4,
        metrics: ServingMetrics | None = None,
        metrics_path: str | None = None,
        fault: Callable[[], Fault] = lambda: NO_FAULT,
    ) -> None:
        self.manager = manager
        self.executor = executor
        # The Prometheus page (monitoring.py): only with a MonitoringConfig
        # that enables it, at exactly its path.
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.fault = fault
        # The real HTTP server (net_http, model_servers/http_server.cc) runs its
        # handlers on --rest_api_num_threads threads: requests beyond that wait.
        self._threads = asyncio.Semaphore(max(num_threads, 1))
        self.busy = 0  # requests holding a thread now

    def app(self) -> web.Application:
        """An aiohttp application answering every path."""
        application = web.Application(client_max_size=1 << 30)
        application.router.add_route("*", "/{tail:.*}", self.handle)
        return application

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Dispatch one HTTP request like the real server's REST handler."""
        path = request.raw_path.split("?", 1)[0]
        if self.metrics is not None and path == self.metrics_path:
            # ProcessPrometheusRequest (http_server.cc): text/plain.
            return web.Response(text=self.metrics.page(), content_type="text/plain")
        if not _V1.fullmatch(path):
            return web.Response(status=404)
        body = await request.read()
        started = time.monotonic()
        # What http_server.cc records: the model name and method the handler
        # parsed from the path, every request by status, latency when OK.
        match = _PREDICT.fullmatch(path) if request.method == "POST" else _STATUS.fullmatch(path)
        model_name = urllib.parse.unquote(match.group(1) or "") if match else ""
        verb = match.group(4).lower() if match and request.method == "POST" else ""
        status = "OK"
        try:
            async with self._threads:
                self.busy += 1
                try:
                    result = await self._dispatch(request.method, path, body)
                finally:
                    self.busy -= 1
        except ServingError as e:
            status = e.code.name
            return _json_response({"error": e.message}, e.http_status)
        finally:
            if self.metrics is not None:
                micros = (time.monotonic() - started) * 1e6
                self.metrics.record(model_name, status, verb, "REST", micros)
        return _json_response(result)

    async def _dispatch(self, method: str, path: str, body: bytes) -> Any:
        if method == "POST" and (match := _PREDICT.fullmatch(path)):
            name, version_text, label, verb = match.groups()
            name = urllib.parse.unquote(name)
            version = _parse_version(version_text)
            label = urllib.parse.unquote(label) if label else None
            doc = _parse_body(body)
            signature_name = _signature_name(doc)
            if verb.lower() == "predict":
                return await self._predict(name, version, label, doc, signature_name)
            return await self._classify_or_regress(
                verb.lower(), name, version, label, doc, signature_name
            )
        if method == "GET" and (match := _STATUS.fullmatch(path)):
            name, version_text, label, metadata = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
            version = _parse_version(version_text)
            if version is not None:
                spec.version.value = version
            elif label:
                spec.version_label = urllib.parse.unquote(label)
            if metadata:
                return self._metadata(spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            fill_model_status(self.manager, spec, response)
            return _proto_json(response)
        raise invalid_argument(f"Malformed request: {method} {path}")

    async def _predict(
        self,
        name: str,
        version: int | None,
        label: str | None,
        doc: dict[str, Any],
        signature_name: str,
    ) -> Any:
        served, model = self.manager.resolve(name, version, label)
        delay = self.fault().delay_for(served)
        if delay:
            await asyncio.sleep(delay)  # a slow-version fault (faults.py)
        inputs, row_format = _predict_inputs(doc, model, signature_name)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(
            self.executor, model.predict, signature_name or DEFAULT_SIGNATURE, inputs, ()
        )
        return _predict_json(outputs, row_format)

    async def _classify_or_regress(
        self,
        verb: str,
        name: str,
        version: int | None,
        label: str | None,
        doc: dict[str, Any],
        signature_name: str,
    ) -> Any:
        examples = _serialized_examples(doc)
        served, model = self.manager.resolve(name, version, label)
        delay = self.fault().delay_for(served)
        if delay:
            await asyncio.sleep(delay)  # a slow-version fault (faults.py)
        signature = signature_name or DEFAULT_SIGNATURE
        loop = asyncio.get_running_loop()
        if verb == "regress":
            values = await loop.run_in_executor(self.executor, model.regress, signature, examples)
            return {"results": [format_float(v, single=True) for v in values]}
        rows = await loop.run_in_executor(self.executor, model.classify, signature, examples)
        return {
            "results": [
                [[label, format_float(score or 0.0, single=True)] for label, score in row]
                for row in rows
            ]
        }

    def _metadata(self, spec: model_pb2.ModelSpec) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.CopyFrom(spec)
        request.metadata_field.append(SIGNATURE_DEF_FIELD)
        response = model_metadata(self.manager, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        return {
            "model_spec": _proto_json(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _proto_json(signature_map)},
        }
