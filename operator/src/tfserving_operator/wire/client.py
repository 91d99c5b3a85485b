"""Asyncio client for TensorFlow Serving's ModelService, without TensorFlow.

The operator asks each model server for the state of every model version
(``GetModelStatus``); it never reloads a server's config in place (each
config generation is a new pod, see docs/architecture.md). The published
Python bindings for those messages, tensorflow-serving-api, import all of
TensorFlow (about 600 MB of memory and two seconds at start), which the
operator process must never load.
So the messages come from our own ``tfserving_wire.proto``: same field numbers
and wire types as TF Serving's, a different proto package. Protobuf's wire
format carries neither package nor message names, so the server cannot tell.

What a gRPC call does carry is the method path, and that is the contract here,
written out by hand because no service is generated from our .proto:

- ``/tensorflow.serving.ModelService/GetModelStatus``
  (GetModelStatusRequest -> GetModelStatusResponse)

Every call has a deadline, and a slightly longer asyncio timeout guards it in
case the deadline is not honoured. Failures come out as `ProbeError` subclasses
whose ``reason`` is ready for a Kubernetes condition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import ClassVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from tfserving_operator.views import ModelState, VersionStatus
from tfserving_operator.wire import tfserving_wire_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "GET_MODEL_STATUS_METHOD",
    "ChannelPool",
    "ModelNotFound",
    "ModelState",
    "ProbeError",
    "ProbeFailed",
    "ProbeTimeout",
    "ServerUnreachable",
    "VersionStatus",
    "get_model_status",
]

log = logging.getLogger(__name__)

GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"

DEFAULT_TIMEOUT = 2.0

# Extra time the asyncio guard grants beyond the gRPC deadline, so that the
# deadline (which reports DEADLINE_EXCEEDED cleanly) normally fires first.
_GUARD_SLACK = 1.0

# Longest server-provided text copied into an exception's message; the full
# text stays in ``details``. Condition messages should stay readable.
_MAX_DETAILS_IN_MESSAGE = 1024

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    # gRPC backs off reconnecting for up to 120 s by default, and while it waits
    # every call fails at once with UNAVAILABLE. A restarted model server pod
    # would then look unreachable for minutes after it is back; cap the wait.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # Model servers are addressed by in-cluster names or pod IPs. An operator
    # pod given HTTP(S)_PROXY for outside access must not send these via it.
    ("grpc.enable_http_proxy", 0),
)

# A channel that only waits for a closed port to open (ChannelPool.wait_for_port)
# tries to connect about every PORT_POLL_MS. The real server opens its ports
# only once its first versions have loaded (model_servers/server.cc builds the
# gRPC server after ServerCore::Create returns), so the moment the port opens
# is the moment to probe. A refused connect fails at once and the next one
# starts PORT_POLL_MS after the last began (gRPC's backoff, held at its
# initial value by the maximum). In gRPC core the minimum reconnect backoff is
# the deadline of one connect attempt instead: 250 ms leaves a slow handshake
# time to finish. Each attempt is a TCP connect, not an RPC.
PORT_POLL_MS = 100
PORT_WAIT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", PORT_POLL_MS),
    ("grpc.max_reconnect_backoff_ms", PORT_POLL_MS),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.enable_http_proxy", 0),
)


class ProbeError(Exception):
    """A call to a model server produced no usable answer.

    ``reason`` is a CamelCase word fit for a Kubernetes condition's reason,
    ``message`` a human sentence fit for its message. ``details`` holds the
    server's (or gRPC's) own text, untruncated; ``code`` the gRPC status code
    if there was one.
    """

    reason: ClassVar[str] = "ProbeFailed"

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        details: str = "",
        code: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.target = target
        self.details = details
        self.code = code


class ServerUnreachable(ProbeError):
    """No connection to the server (UNAVAILABLE: refused, unresolvable, reset)."""

    reason: ClassVar[str] = "ServerUnreachable"


class ProbeTimeout(ProbeError):
    """The server did not answer within the timeout (DEADLINE_EXCEEDED)."""

    reason: ClassVar[str] = "ProbeTimeout"


class ModelNotFound(ProbeError):
    """The server answered that it does not know the model, version or label (NOT_FOUND)."""

    reason: ClassVar[str] = "ModelNotFound"


class ProbeFailed(ProbeError):
    """Any other failure: another status code, or a response that does not parse."""

    reason: ClassVar[str] = "ProbeFailed"


def _clip(text: str) -> str:
    if len(text) <= _MAX_DETAILS_IN_MESSAGE:
        return text
    return text[:_MAX_DETAILS_IN_MESSAGE] + "..."


def _map_rpc_error(err: grpc.aio.AioRpcError, target: str, what: str) -> ProbeError:
    """Translate a gRPC failure of ``what`` (e.g. "GetModelStatus") into a ProbeError."""
    code = err.code()
    details = str(err.details() or "")
    cls: type[ProbeError]
    if code == grpc.StatusCode.UNAVAILABLE:
        cls, message = ServerUnreachable, f"model server {target} unreachable: {_clip(details)}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        cls, message = ProbeTimeout, f"model server {target} did not answer {what} in time"
    elif code == grpc.StatusCode.NOT_FOUND:
        cls, message = ModelNotFound, f"model server {target}: {_clip(details)}"
    else:
        name = getattr(code, "name", str(code))
        cls = ProbeFailed
        message = f"{what} on model server {target} failed: {name}: {_clip(details)}"
    return cls(message, target=target, details=details, code=code)


def _model_spec(model_name: str, version: int | None, label: str | None) -> pb.ModelSpec:
    if not model_name:
        raise ValueError("model_name must not be empty")
    if version is not None and label is not None:
        # ModelSpec holds one or the other (a oneof): setting both would
        # silently keep only the last.
        raise ValueError("pass a version or a label, not both")
    spec = pb.ModelSpec(name=model_name)
    if version is not None:
        # Assigning the wrapper marks the field present even for version 0,
        # which is not the same request as "no version".
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    return spec


def _check_timeout(timeout: float) -> None:
    # Every call must be bounded: refuse "no timeout" rather than hang a probe.
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


async def _call(
    channel: grpc.aio.Channel,
    method: str,
    request: bytes,
    target: str,
    what: str,
    timeout: float,
) -> bytes:
    """One unary call carrying raw bytes, with gRPC errors mapped to ProbeErrors.

    Requests and responses cross as bytes, and responses are parsed by the
    callers: a response that does not parse then raises DecodeError in our code,
    where it is named ProbeFailed, rather than inside grpc's deserializer.
    """
    stub = channel.unary_unary(method)
    try:
        # The guard catches a deadline that is somehow not enforced, so a probe
        # can never outlive its timeout by more than the slack.
        async with asyncio.timeout(timeout + _GUARD_SLACK):
            response = await stub(request, timeout=timeout)
    except grpc.aio.AioRpcError as err:
        raise _map_rpc_error(err, target, what) from err
    except TimeoutError as err:
        raise ProbeTimeout(
            f"model server {target} did not answer {what} in time", target=target
        ) from err
    except asyncio.CancelledError as err:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our caller cancelled us: that must propagate
        # Nobody cancelled this task: grpc.aio ends a call in flight with
        # CancelledError when its channel is closed (its target was dropped
        # from a pool). Letting that escape would look like a cancellation of
        # the caller's task, so it becomes an ordinary failed probe.
        raise ProbeFailed(
            f"{what} on model server {target} was cancelled: its channel closed",
            target=target,
        ) from err
    except grpc.aio.UsageError as err:
        # The channel was closed under us (its target was dropped from a pool).
        raise ProbeFailed(
            f"{what} on model server {target} failed: {err}", target=target, details=str(err)
        ) from err
    if not isinstance(response, bytes):
        raise ProbeFailed(
            f"{what} on model server {target} returned {type(response).__name__}, not bytes",
            target=target,
        )
    return response


def _new_channel(target: str, options: Sequence[tuple[str, int]]) -> grpc.aio.Channel:
    # Creating a channel does no I/O: name resolution and connecting happen on
    # gRPC's own threads at the first call, so this never blocks the loop.
    return grpc.aio.insecure_channel(target, options=list(options))


async def get_model_status(
    target: str,
    model_name: str,
    version: int | None = None,
    label: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    channel: grpc.aio.Channel | None = None,
) -> list[VersionStatus]:
    """Ask the model server at ``target`` (``host:port``) for a model's version states.

    With neither ``version`` nor ``label``, TF Serving reports every version it
    knows of the model; with one of them, that version only. Versions come back
    in the server's order. The call uses ``channel`` if given (left open), else
    a channel opened and closed for this one call.

    Raises ServerUnreachable, ProbeTimeout, ModelNotFound or ProbeFailed (all
    ProbeError), and ValueError for invalid arguments.
    """
    _check_timeout(timeout)
    request = pb.GetModelStatusRequest(model_spec=_model_spec(model_name, version, label))
    payload = request.SerializeToString()
    if channel is None:
        async with _new_channel(target, CHANNEL_OPTIONS) as own:
            raw = await _call(
                own, GET_MODEL_STATUS_METHOD, payload, target, "GetModelStatus", timeout
            )
    else:
        raw = await _call(
            channel, GET_MODEL_STATUS_METHOD, payload, target, "GetModelStatus", timeout
        )
    try:
        response = pb.GetModelStatusResponse.FromString(raw)
    except DecodeError as err:
        raise ProbeFailed(
            f"model server {target} sent a GetModelStatus response that does not parse",
            target=target,
            details=str(err),
        ) from err
    return [
        VersionStatus(
            version=int(s.version),
            state=ModelState.from_wire(int(s.state)),
            error_code=int(s.status.error_code),
            error_message=str(s.status.error_message),
        )
        for s in response.model_version_status
    ]


class ChannelPool:
    """One reusable grpc.aio channel per model-server target.

    Channels are created lazily and never block: connecting happens on gRPC's
    threads during the first call. A pool belongs to the event loop it is used
    on (grpc.aio channels are bound to their loop). Call `discard` for a
    target that is gone, and `close` on shutdown.
    """

    def __init__(self, options: Sequence[tuple[str, int]] = CHANNEL_OPTIONS) -> None:
        """Create an empty pool whose channels get the given gRPC channel options."""
        self._options = tuple(options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    @property
    def targets(self) -> frozenset[str]:
        """The targets that currently have an open channel."""
        return frozenset(self._channels)

    @property
    def closed(self) -> bool:
        """True once `close` has been called; the pool then opens no channel."""
        return self._closed

    def channel(self, target: str) -> grpc.aio.Channel:
        """Return the channel for ``target``, opening it on first use."""
        if self._closed:
            raise RuntimeError("ChannelPool is closed")
        ch = self._channels.get(target)
        if ch is None:
            ch = _new_channel(target, self._options)
            self._channels[target] = ch
        return ch

    async def get_model_status(
        self,
        target: str,
        model_name: str,
        version: int | None = None,
        label: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[VersionStatus]:
        """`get_model_status` over this pool's channel for ``target``."""
        return await get_model_status(
            target, model_name, version, label, timeout, channel=self.channel(target)
        )

    async def wait_for_port(self, target: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``target`` to accept a connection.

        True once connected: the connected channel becomes the target's (unless
        a call opened another meanwhile, which is kept: replacing it would
        cancel that call). False when the time ran out or the pool closed.
        """
        if self._closed:
            return False
        channel = _new_channel(target, PORT_WAIT_OPTIONS)
        try:
            async with asyncio.timeout(seconds):
                await channel.channel_ready()
        except TimeoutError:
            await channel.close()
            return False
        except BaseException:
            await channel.close()
            raise
        if self._closed or target in self._channels:
            await channel.close()
            return not self._closed
        self._channels[target] = channel
        return True

    async def discard(self, target: str) -> None:
        """Close the channel for ``target`` if there is one; calls in flight on it are cancelled."""
        ch = self._channels.pop(target, None)
        if ch is not None:
            await self._close_all([ch])

    async def close(self) -> None:
        """Close every channel and refuse new ones (operator shutdown)."""
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        await self._close_all(channels)

    async def __aenter__(self) -> ChannelPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @staticmethod
    async def _close_all(channels: Sequence[grpc.aio.Channel]) -> None:
        # grace=None cancels calls in flight at once: they are probes of a
        # target nobody needs any more, and each is bounded anyway.
        results = await asyncio.gather(*(ch.close(None) for ch in channels), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("closing a model server channel failed: %r", result)
