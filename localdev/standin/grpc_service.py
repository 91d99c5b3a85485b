"""gRPC ``ModelService`` and ``PredictionService`` of one pod, on ``grpc.aio``.

Built on tensorflow-serving-api's generated servicers, so the wire protocol is
the real one. TensorFlow work runs in a thread pool; the event loop only
decodes, dispatches and encodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from .errors import ServingError, invalid_argument
from .faults import NO_FAULT, Fault
from .models import DEFAULT_SIGNATURE, LoadedModel
from .monitoring import ServingMetrics
from .tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from .versions import VersionManager

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
T = TypeVar("T")


def resolve_spec(manager: VersionManager, spec: model_pb2.ModelSpec) -> tuple[int, LoadedModel]:
    """The AVAILABLE version a ``ModelSpec`` asks for (by version, label or latest)."""
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return manager.resolve(spec.name, version, label)


def fill_model_status(
    manager: VersionManager,
    spec: model_pb2.ModelSpec,
    response: get_model_status_pb2.GetModelStatusResponse,
) -> None:
    """``GetModelStatus`` semantics. Only an explicit version narrows the answer:
    a spec with a version label lists every version, as the real server does."""
    version = spec.version.value if spec.HasField("version") else None
    for number, status in manager.model_status(spec.name, version):
        entry = response.model_version_status.add()
        entry.version = number
        entry.state = int(status.state)
        # The real server always fills status, OK included.
        entry.status.SetInParent()
        if status.error is not None:
            entry.status.error_code = status.error.code_number
            entry.status.error_message = status.error.message


def serialized_examples(request_input: input_pb2.Input) -> list[bytes]:
    """The ``tf.Example``s of a Classify/Regress input, each merged with the
    shared context (the example's own features win)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(request_input.example_list.examples)
        if not examples:
            raise invalid_argument("Input is empty.")
        return [e.SerializeToString() for e in examples]
    if kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        if not with_context.examples:
            raise invalid_argument("Input is empty.")
        context = with_context.context.SerializeToString()
        # Concatenated serializations parse as a merge: context first, then
        # the example, as the real server feeds them.
        return [context + e.SerializeToString() for e in with_context.examples]
    raise invalid_argument("Input is empty.")


class _Base:
    def __init__(
        self,
        manager: VersionManager,
        executor: Executor,
        metrics: ServingMetrics | None = None,
        fault: Callable[[], Fault] = lambda: NO_FAULT,
    ) -> None:
        self.manager = manager
        self.executor = executor
        self.metrics = metrics
        self.fault = fault

    async def _slow_graph(self, version: int) -> None:
        """A ``slow-version`` fault: this version's graph takes longer (inside
        the handler, so the request latency metric sees it, as it would a slow
        ``Session::Run``)."""
        delay = self.fault().delay_for(version)
        if delay:
            await asyncio.sleep(delay)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _answer(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        work: Awaitable[T],
        model_name: str | None = None,
    ) -> T:
        """Run `work`; a prediction call (`model_name` given) is counted in the
        metrics like prediction_service_impl.cc does: every call by status,
        the latency of successful ones."""
        started = time.monotonic()
        status = "OK"
        try:
            return await work
        except ServingError as e:
            status = e.code.name
            log.debug("%s: %s failed: %s", self.manager.name, method, e.message)
            await context.abort(e.code, e.message)
            raise  # abort raises; this keeps type checkers content
        except Exception:
            status = "UNKNOWN"
            raise
        finally:
            if model_name is not None and self.metrics is not None:
                micros = (time.monotonic() - started) * 1e6
                self.metrics.record(model_name, status, method, "GRPC", micros)


class ModelService(_Base, model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``."""

    async def GetModelStatus(
        self,
        request: get_model_status_pb2.GetModelStatusRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Per-version states of a model, or of one version of it."""

        async def work() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            response = get_model_status_pb2.GetModelStatusResponse()
            fill_model_status(self.manager, request.model_spec, response)
            return response

        return await self._answer(context, "GetModelStatus", work())

    async def HandleReloadConfigRequest(
        self,
        request: model_management_pb2.ReloadConfigRequest,
        context: grpc.aio.ServicerContext,
    ) -> model_management_pb2.ReloadConfigResponse:
        """Replace the model config whole (models left out are unloaded)."""

        async def work() -> model_management_pb2.ReloadConfigResponse:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            await self.manager.reload_config(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.SetInParent()
            return response

        return await self._answer(context, "HandleReloadConfigRequest", work())


class PredictionService(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` (all but ``MultiInference``)."""

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Run a signature on the request's tensors."""

        async def work() -> predict_pb2.PredictResponse:
            version, model = resolve_spec(self.manager, request.model_spec)
            await self._slow_graph(version)
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature not in model.signature_defs:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f'Serving signature key "{signature}" not found.',
                )
            inputs = {k: tensor_proto_to_ndarray(v, k) for k, v in request.inputs.items()}
            outputs = await self._in_thread(
                model.predict, signature, inputs, list(request.output_filter)
            )
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = version
            response.model_spec.signature_name = signature
            for name, array in outputs.items():
                response.outputs[name].CopyFrom(ndarray_to_tensor_proto(array))
            return response

        return await self._answer(context, "Predict", work(), request.model_spec.name)

    async def Classify(
        self,
        request: classification_pb2.ClassificationRequest,
        context: grpc.aio.ServicerContext,
    ) -> classification_pb2.ClassificationResponse:
        """Classify ``tf.Example``s with a classification-shaped signature."""

        async def work() -> classification_pb2.ClassificationResponse:
            version, model = resolve_spec(self.manager, request.model_spec)
            await self._slow_graph(version)
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            examples = serialized_examples(request.input)
            rows = await self._in_thread(model.classify, signature, examples)
            response = classification_pb2.ClassificationResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = version
            response.model_spec.signature_name = signature
            for row in rows:
                classifications = response.result.classifications.add()
                for label, score in row:
                    entry = classifications.classes.add()
                    entry.label = label
                    if score is not None:
                        entry.score = score
            return response

        return await self._answer(context, "Classify", work(), request.model_spec.name)

    async def Regress(
        self,
        request: regression_pb2.RegressionRequest,
        context: grpc.aio.ServicerContext,
    ) -> regression_pb2.RegressionResponse:
        """Regress ``tf.Example``s with a regression-shaped signature."""

        async def work() -> regression_pb2.RegressionResponse:
            version, model = resolve_spec(self.manager, request.model_spec)
            await self._slow_graph(version)
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            examples = serialized_examples(request.input)
            values = await self._in_thread(model.regress, signature, examples)
            response = regression_pb2.RegressionResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = version
            response.model_spec.signature_name = signature
            for value in values:
                response.result.regressions.add().value = value
            return response

        return await self._answer(context, "Regress", work(), request.model_spec.name)

    async def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """The version's ``SignatureDefMap`` (the only metadata field there is)."""

        async def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            return model_metadata(self.manager, request)

        return await self._answer(context, "GetModelMetadata", work())


def model_metadata(
    manager: VersionManager, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """``GetModelMetadata`` semantics, shared with the REST ``/metadata`` call."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for name in request.metadata_field:
        if name != SIGNATURE_DEF_FIELD:
            raise invalid_argument(f"Metadata field {name} is not supported")
    version, model = resolve_spec(manager, request.model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in model.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def add_services(
    server: grpc.aio.Server,
    manager: VersionManager,
    executor: Executor,
    metrics: ServingMetrics | None = None,
    fault: Callable[[], Fault] = lambda: NO_FAULT,
) -> None:
    """Register both services of one pod on its gRPC server."""
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(manager, executor), server
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, executor, metrics, fault), server
    )


class RpcPool(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The real gRPC server's bounded thread pool, shared by every RPC.

    tensorflow_model_server runs a synchronous gRPC server whose threads are
    capped by ``ResourceQuota::SetMaxThreads(--grpc_max_threads)``
    (model_servers/server.cc at 2.20.0; default 4 x NumSchedulableCPUs in
    server.h). Every RPC, GetModelStatus included, needs one of those threads:
    when Predicts hold them all, a status call waits in the queue and may miss
    its deadline. Listed first among the interceptors, so that whatever the
    handler does (faults included) holds a slot.
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.busy = 0
        self._slots = asyncio.Semaphore(self.size)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def pooled(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._slots:
                self.busy += 1
                try:
                    return await inner(request, context)
                finally:
                    self.busy -= 1

        return grpc.unary_unary_rpc_method_handler(
            pooled,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
