"""Model server faults on demand, for the reliability tests (test infrastructure only).

A pod annotation ``standin.tests.tfoperator.dev/fault`` makes that pod's
stand-in misbehave the way broken model servers do in the wild:

* ``hang``: ``ModelService`` calls are accepted and never answered (a wedged
  server: the TCP connection and HTTP/2 stream stay open);
* ``garbage``: ``ModelService`` calls answer OK with bytes that are not a
  protobuf message (a proxy or a different service on the port);
* ``slow=<seconds>``: ``ModelService`` calls answer correctly after that
  many seconds (an overloaded server);
* ``vanish``: the gRPC and REST listeners close while the pod stays Running
  (the process hangs without its ports); clearing the annotation opens
  them again. The stand-in's kubelet (``kubelet.py``) sees it like a real
  one: readiness probes fail, and failed liveness probes kill and restart
  the container (the restarted server keeps the fault while the annotation
  stays);
* ``slow-version=<version>:<seconds>``: requests that version answers
  (gRPC or REST) take that much longer, inside the handler, so the server's
  own request latency metric shows it (a version whose graph is slower, the
  regression a latency canary must catch; monitoring.py);
* ``slow-predict=<seconds>``: ``PredictionService`` calls take that much
  longer (a slow graph). They hold their thread of the server's one gRPC pool
  meanwhile (the fault runs inside ``grpc_service.RpcPool``), so under load
  a ``GetModelStatus`` call waits for a thread as it does on the real server.

``PredictionService`` and REST requests are not touched by hang, garbage and
slow: the operator only ever calls ``ModelService``. The annotation is read
on every call, so a fault can be switched on and off on a live pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

FAULT_ANNOTATION = "standin.tests.tfoperator.dev/fault"
MODEL_SERVICE_PREFIX = "/tensorflow.serving.ModelService/"
PREDICTION_SERVICE_PREFIX = "/tensorflow.serving.PredictionService/"
# Bytes no protobuf parser accepts: field number 0 does not exist, and wire
# type 7 is not a wire type.
GARBAGE_RESPONSE = b"\xff\xff\xff\xff not a protobuf message"


@dataclass(frozen=True)
class Fault:
    """One fault mode; ``kind`` is "" (none), hang, garbage, slow or vanish."""

    kind: str = ""
    seconds: float = 0.0
    version: int = 0  # slow-version only

    def delay_for(self, version: int) -> float:
        """Extra seconds a request served by `version` takes (slow-version)."""
        return self.seconds if self.kind == "slow-version" and version == self.version else 0.0

    @property
    def vanish(self) -> bool:
        """The listeners must be closed."""
        return self.kind == "vanish"

    def describe(self) -> str:
        """The annotation's spelling of this fault."""
        if self.kind == "slow-version":
            return f"{self.kind}={self.version}:{self.seconds:g}"
        if self.kind in ("slow", "slow-predict"):
            return f"{self.kind}={self.seconds:g}"
        return self.kind or "none"


NO_FAULT = Fault()


def parse_fault(value: str | None) -> Fault:
    """Parse the annotation; raises ``ValueError`` on anything else, so a typo is loud."""
    if value is None or not value.strip():
        return NO_FAULT
    text = value.strip()
    if text in ("hang", "garbage", "vanish"):
        return Fault(text)
    name, eq, seconds_text = text.partition("=")
    if name == "slow-version" and eq:
        version_text, colon, delay_text = seconds_text.partition(":")
        seconds = float(delay_text) if colon else -1.0
        if not version_text.strip().isdigit() or seconds < 0:
            raise ValueError(f"expected slow-version=<version>:<seconds>, got {value!r}")
        return Fault(name, seconds, int(version_text))
    if name in ("slow", "slow-predict") and eq:
        seconds = float(seconds_text)
        if seconds < 0:
            raise ValueError(f"negative delay: {value!r}")
        return Fault(name, seconds)
    raise ValueError(
        "expected hang, garbage, slow=<seconds>, slow-predict=<seconds>, "
        f"slow-version=<version>:<seconds> or vanish, got {value!r}"
    )


Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class FaultInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rewrites ``ModelService`` handlers while the pod's fault says so."""

    def __init__(self, current: Callable[[], Fault], name: str) -> None:
        self._current = current
        self._name = name

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        fault = self._current()
        method = str(details.method)
        if (
            fault.kind == "slow-predict"
            and handler is not None
            and handler.unary_unary is not None
            and method.startswith(PREDICTION_SERVICE_PREFIX)
        ):
            return grpc.unary_unary_rpc_method_handler(
                self._slow(method, fault.seconds, handler.unary_unary, quiet=True),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler is None or not method.startswith(MODEL_SERVICE_PREFIX):
            return handler
        if fault.kind == "hang":
            return grpc.unary_unary_rpc_method_handler(self._hang(method))
        if fault.kind == "garbage":
            # No serializers: the bytes go out exactly as returned.
            return grpc.unary_unary_rpc_method_handler(self._garbage(method))
        if fault.kind == "slow" and handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._slow(method, fault.seconds, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _hang(self, method: str) -> Behaviour:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            log.info("%s: %s: hanging (fault annotation)", self._name, method)
            # Until the caller gives up (its deadline cancels this task).
            await asyncio.Event().wait()

        return behaviour

    def _garbage(self, method: str) -> Behaviour:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> bytes:
            log.info("%s: %s: answering garbage (fault annotation)", self._name, method)
            return GARBAGE_RESPONSE

        return behaviour

    def _slow(self, method: str, seconds: float, real: Behaviour, quiet: bool = False) -> Behaviour:
        level = logging.DEBUG if quiet else logging.INFO

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            log.log(level, "%s: %s: answering in %.1f s (fault)", self._name, method, seconds)
            await asyncio.sleep(seconds)
            return await real(request, context)

        return behaviour
