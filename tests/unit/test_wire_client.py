"""The ModelService client against in-process gRPC servers on 127.0.0.1.

Servers that play TF Serving are built from tensorflow-serving-api's own
generated servicer and message classes, so the server side of the wire is TF
Serving's code, not ours. Those tests import TensorFlow and carry the
``tensorflow`` mark; the rest (raw-bytes servers, argument checks, the import
hygiene check) do not, so they run where TensorFlow is not installed.

There is no pytest-asyncio: each test drives its coroutine with asyncio.run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.message import DecodeError

from tfserving_operator.views import CODE_NAMES
from tfserving_operator.wire import client
from tfserving_operator.wire import tfserving_wire_pb2 as pb
from tfserving_operator.wire.client import (
    ChannelPool,
    ModelNotFound,
    ModelState,
    ProbeError,
    ProbeFailed,
    ProbeTimeout,
    ServerUnreachable,
    VersionStatus,
    get_model_status,
)

SERVICE = "tensorflow.serving.ModelService"
# What Kubernetes accepts as a condition reason.
K8S_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")

Handler = Callable[[Any, Any], Awaitable[Any]]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def free_port() -> int:
    """A port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(register: Callable[[grpc.aio.Server], None], port: int = 0) -> AsyncIterator[str]:
    """Run a grpc.aio server on 127.0.0.1 for the block; yield its target."""
    server = grpc.aio.server()
    register(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        # grace=None cancels handlers still running (the hanging ones).
        await server.stop(None)


def raw_handlers(**methods: Handler) -> Callable[[grpc.aio.Server], None]:
    """Register ModelService methods that receive and return raw bytes."""

    def register(server: grpc.aio.Server) -> None:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(fn)  # no (de)serializers: bytes
            for name, fn in methods.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    return register


# --- TF Serving's own server-side code ----------------------------------------------------------


@pytest.fixture(scope="module")
def tfs() -> SimpleNamespace:
    """tensorflow-serving-api's modules and a configurable ModelService servicer."""
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        status_pb2,
    )

    class Service(model_service_pb2_grpc.ModelServiceServicer):
        """Records each request (TF Serving's classes) and answers via a handler."""

        def __init__(self, on_status: Handler | None = None):
            self.requests: list[Any] = []
            self.on_status = on_status

        async def GetModelStatus(self, request: Any, context: Any) -> Any:
            self.requests.append(request)
            assert self.on_status is not None
            return await self.on_status(request, context)

    def register(service: Service) -> Callable[[grpc.aio.Server], None]:
        return lambda server: model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            service, server
        )

    codes = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    return SimpleNamespace(
        Service=Service,
        register=register,
        State=get_model_status_pb2.ModelVersionStatus.State,
        GetModelStatusResponse=get_model_status_pb2.GetModelStatusResponse,
        code=lambda name: codes.values_by_name[name].number,
    )


def status_response(tfs: SimpleNamespace, *versions: tuple[int, str, str, str]) -> Handler:
    """A handler answering (version, state, error code name, error message) rows."""

    async def answer(request: Any, context: Any) -> Any:
        resp = tfs.GetModelStatusResponse()
        for version, state, code, message in versions:
            s = resp.model_version_status.add(version=version, state=tfs.State.Value(state))
            s.status.error_code = tfs.code(code)
            s.status.error_message = message
        return resp

    return answer


def aborting(code: grpc.StatusCode, details: str) -> Handler:
    async def answer(request: Any, context: Any) -> Any:
        await context.abort(code, details)

    return answer


async def hang(request: Any, context: Any) -> Any:
    # Waits until the server stops and cancels it: longer than any timeout.
    await asyncio.Event().wait()


@pytest.mark.tensorflow
def test_available_version(tfs: SimpleNamespace) -> None:
    service = tfs.Service(on_status=status_response(tfs, (1, "AVAILABLE", "OK", "")))

    async def main() -> list[VersionStatus]:
        async with serve(tfs.register(service)) as target:
            return await get_model_status(target, "mnist")

    result = run(main())
    assert result == [VersionStatus(1, ModelState.AVAILABLE, 0, "")]
    assert result[0].available and not result[0].failed
    (request,) = service.requests
    assert request.model_spec.name == "mnist"
    assert not request.model_spec.HasField("version")
    assert request.model_spec.WhichOneof("version_choice") is None


@pytest.mark.tensorflow
def test_end_with_error_and_several_versions(tfs: SimpleNamespace) -> None:
    message = "Could not find SavedModel .pb or .pbtxt at /models/mnist/3 ✗"
    service = tfs.Service(
        on_status=status_response(
            tfs,
            (3, "END", "NOT_FOUND", message),
            (2, "AVAILABLE", "OK", ""),
            (1, "UNLOADING", "OK", ""),
        )
    )

    async def main() -> list[VersionStatus]:
        async with serve(tfs.register(service)) as target:
            return await get_model_status(target, "mnist")

    failed, good, leaving = run(main())
    assert failed == VersionStatus(3, ModelState.END, tfs.code("NOT_FOUND"), message)
    assert failed.failed and not failed.available
    assert failed.error_code_name == "NOT_FOUND"
    assert good.available
    assert leaving.state is ModelState.UNLOADING


@pytest.mark.tensorflow
def test_every_state_and_a_future_one(tfs: SimpleNamespace) -> None:
    async def answer(request: Any, context: Any) -> Any:
        resp = tfs.GetModelStatusResponse()
        for number in [*tfs.State.values(), 60]:
            resp.model_version_status.add(version=number, state=number)
        return resp

    async def main() -> list[VersionStatus]:
        async with serve(tfs.register(tfs.Service(on_status=answer))) as target:
            return await get_model_status(target, "m")

    states = {s.version: s.state for s in run(main())}
    assert states == {m.value: m for m in ModelState} | {60: ModelState.UNKNOWN}


@pytest.mark.tensorflow
@pytest.mark.parametrize(
    ("kwargs", "choice", "value"),
    [
        ({"version": 0}, "version", 0),
        ({"version": 7}, "version", 7),
        ({"label": "stable"}, "version_label", "stable"),
    ],
)
def test_request_carries_version_or_label(
    tfs: SimpleNamespace, kwargs: dict[str, Any], choice: str, value: object
) -> None:
    service = tfs.Service(on_status=status_response(tfs, (7, "AVAILABLE", "OK", "")))

    async def main() -> None:
        async with serve(tfs.register(service)) as target:
            await get_model_status(target, "mnist", **kwargs)

    run(main())
    spec = service.requests[0].model_spec
    assert spec.WhichOneof("version_choice") == choice
    assert (spec.version.value if choice == "version" else spec.version_label) == value


@pytest.mark.tensorflow
def test_not_found_carries_server_message(tfs: SimpleNamespace) -> None:
    text = "Could not find any versions of model nope"
    service = tfs.Service(on_status=aborting(grpc.StatusCode.NOT_FOUND, text))

    async def main() -> None:
        async with serve(tfs.register(service)) as target:
            await get_model_status(target, "nope")

    with pytest.raises(ModelNotFound) as caught:
        run(main())
    assert caught.value.reason == "ModelNotFound"
    assert caught.value.details == text
    assert text in caught.value.message
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.tensorflow
def test_hanging_server_times_out_on_time(tfs: SimpleNamespace) -> None:
    timeout = 0.3

    async def main() -> float:
        async with serve(tfs.register(tfs.Service(on_status=hang))) as target:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(ProbeTimeout) as caught:
                await get_model_status(target, "mnist", timeout=timeout)
            assert caught.value.reason == "ProbeTimeout"
            assert caught.value.target == target
            assert caught.value.message == (
                f"model server {target} did not answer GetModelStatus in time"
            )
            return loop.time() - start

    elapsed = run(main())
    assert timeout * 0.9 <= elapsed < timeout + 0.7


@pytest.mark.tensorflow
@pytest.mark.parametrize("details", ["boom", ""])
def test_other_status_codes_are_probe_failed(tfs: SimpleNamespace, details: str) -> None:
    service = tfs.Service(on_status=aborting(grpc.StatusCode.INTERNAL, details))
    targets: list[str] = []

    async def main() -> None:
        async with serve(tfs.register(service)) as target:
            targets.append(target)
            await get_model_status(target, "mnist")

    with pytest.raises(ProbeFailed) as caught:
        run(main())
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert (caught.value.target, caught.value.details) == (targets[0], details)
    assert caught.value.message == (
        f"GetModelStatus on model server {targets[0]} failed: INTERNAL: {details}"
    )


# --- servers that are not TF Serving, or not there ----------------------------------------------


def test_closed_port_is_unreachable() -> None:
    target = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable) as caught:
        run(get_model_status(target, "mnist", timeout=2.0))
    assert caught.value.reason == "ServerUnreachable"
    assert caught.value.target == target
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "garbage",
    [b"\x0a\x05ab", b"\xff" * 11, b"\x0f", b"\x0a\x02\xff\xff", b"garbage!"],
    ids=["truncated", "bad-varint", "bad-wire-type", "bad-nested", "text"],
)
def test_unparseable_response_is_probe_failed(garbage: bytes) -> None:
    async def answer(request: bytes, context: Any) -> bytes:
        return garbage

    targets: list[str] = []

    async def main() -> None:
        async with serve(raw_handlers(GetModelStatus=answer)) as target:
            targets.append(target)
            await get_model_status(target, "mnist")

    with pytest.raises(ProbeFailed) as caught:
        run(main())
    assert caught.value.reason == "ProbeFailed"
    assert caught.value.message == (
        f"model server {targets[0]} sent a GetModelStatus response that does not parse"
    )
    assert caught.value.target == targets[0]
    # protobuf's own words on what is wrong stay in details.
    assert isinstance(caught.value.__cause__, DecodeError)
    assert caught.value.details == str(caught.value.__cause__) != ""


def test_server_without_model_service_is_probe_failed() -> None:
    async def main() -> None:
        async with serve(lambda server: None) as target:
            await get_model_status(target, "mnist")

    with pytest.raises(ProbeFailed) as caught:
        run(main())
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_request_bytes_are_ours() -> None:
    """What reaches the server is our serialized GetModelStatusRequest (no TF needed)."""
    seen: list[bytes] = []

    async def answer(request: bytes, context: Any) -> bytes:
        seen.append(request)
        status = pb.ModelVersionStatus(version=4, state=pb.ModelVersionStatus.LOADING)
        return bytes(pb.GetModelStatusResponse(model_version_status=[status]).SerializeToString())

    async def main() -> list[VersionStatus]:
        async with serve(raw_handlers(GetModelStatus=answer)) as target:
            return await get_model_status(target, "mnist", label="canary")

    assert run(main()) == [VersionStatus(4, ModelState.LOADING, 0, "")]
    request = pb.GetModelStatusRequest.FromString(seen[0])
    assert (request.model_spec.name, request.model_spec.version_label) == ("mnist", "canary")


# --- arguments and error classes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"model_name": "m", "version": 1, "label": "stable"},
            "pass a version or a label, not both",
        ),
        ({"model_name": ""}, "model_name must not be empty"),
        ({"model_name": "m", "timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        (
            {"model_name": "m", "timeout": -1.0},
            "timeout must be a positive number of seconds, got -1.0",
        ),
        (
            {"model_name": "m", "timeout": float("nan")},
            "timeout must be a positive number of seconds, got nan",
        ),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        run(get_model_status("127.0.0.1:1", **kwargs))
    assert str(caught.value) == message


def test_reasons_are_kubernetes_condition_reasons() -> None:
    classes = [ProbeError, ServerUnreachable, ProbeTimeout, ModelNotFound, ProbeFailed]
    for cls in classes:
        assert K8S_REASON.match(cls.reason), cls
        assert issubclass(cls, ProbeError)
    assert len({cls.reason for cls in classes[1:]}) == len(classes) - 1


def test_probe_error_fields_default_to_empty() -> None:
    """Raise sites without a server text or status code leave them empty, not made up."""
    err = ProbeFailed("it failed")
    assert (str(err), err.message, err.target, err.details, err.code) == (
        "it failed",
        "it failed",
        "",
        "",
        None,
    )


def test_unknown_state_number_reads_unknown() -> None:
    assert ModelState.from_wire(30) is ModelState.AVAILABLE
    assert ModelState.from_wire(60) is ModelState.UNKNOWN
    assert ModelState.from_wire(-1) is ModelState.UNKNOWN


def test_import_does_not_load_tensorflow() -> None:
    """The operator's import of the client must not pull TensorFlow in."""
    code = textwrap.dedent(
        """
        import sys
        import tfserving_operator.wire.client
        heavy = ("tensorflow", "tensorflow_serving")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
        print(loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


# --- the channel pool ---------------------------------------------------------------------------


def test_pool_reuses_and_closes_channels() -> None:
    async def main() -> None:
        pool = ChannelPool()
        assert pool.closed is False
        a = pool.channel("127.0.0.1:1")
        assert pool.channel("127.0.0.1:1") is a
        b = pool.channel("127.0.0.1:2")
        assert b is not a
        assert pool.targets == {"127.0.0.1:1", "127.0.0.1:2"}

        await pool.discard("127.0.0.1:1")
        assert pool.targets == {"127.0.0.1:2"}
        assert pool.channel("127.0.0.1:1") is not a  # a dropped target gets a new channel

        await pool.discard("127.0.0.1:1")
        await pool.discard("never-seen:1")
        assert pool.targets == {"127.0.0.1:2"}

        await pool.close()
        assert pool.closed is True and not pool.targets
        with pytest.raises(RuntimeError, match=r"^ChannelPool is closed$"):
            pool.channel("127.0.0.1:2")

    run(main())


@pytest.mark.tensorflow
def test_pool_probes_share_one_channel(tfs: SimpleNamespace) -> None:
    service = tfs.Service(on_status=status_response(tfs, (1, "AVAILABLE", "OK", "")))

    async def main() -> None:
        async with serve(tfs.register(service)) as target, ChannelPool() as pool:
            first = await pool.get_model_status(target, "mnist")
            channel = pool.channel(target)
            both = await asyncio.gather(
                pool.get_model_status(target, "mnist", version=1),
                pool.get_model_status(target, "mnist", label="stable"),
            )
            assert pool.channel(target) is channel
            assert list(both) == [first, first]
        assert pool.closed

    run(main())
    # Each probe asked for what it was given (the two gathered ones in either order).
    asked = [
        (s.name, s.WhichOneof("version_choice"), s.version.value, s.version_label)
        for s in (request.model_spec for request in service.requests)
    ]
    assert asked[0] == ("mnist", None, 0, "")
    assert sorted(asked[1:]) == [
        ("mnist", "version", 1, ""),
        ("mnist", "version_label", 0, "stable"),
    ]


def hanging_server(reached: asyncio.Event) -> Callable[[grpc.aio.Server], None]:
    """A ModelService whose GetModelStatus sets ``reached``, then never answers."""

    async def hang_after_signal(request: bytes, context: Any) -> bytes:
        reached.set()
        await hang(request, context)
        raise AssertionError("unreachable: hang() returns only by cancellation")

    return raw_handlers(GetModelStatus=hang_after_signal)


def test_discard_cancels_a_probe_in_flight() -> None:
    async def main() -> None:
        reached = asyncio.Event()
        async with serve(hanging_server(reached)) as target:
            pool = ChannelPool()
            probe = asyncio.create_task(pool.get_model_status(target, "mnist", timeout=30))
            await asyncio.wait_for(reached.wait(), timeout=5)
            # The target disappears while the call is in flight: it must end
            # now, as a failed probe of that target, not after its 30 s
            # deadline, and not as a cancellation of the probing task.
            await pool.discard(target)
            with pytest.raises(ProbeFailed) as caught:
                await asyncio.wait_for(probe, timeout=5)
            assert caught.value.message == (
                f"GetModelStatus on model server {target} was cancelled: its channel closed"
            )
            assert (caught.value.target, caught.value.details, caught.value.code) == (
                target,
                "",
                None,
            )
            assert isinstance(caught.value.__cause__, asyncio.CancelledError)
            await pool.close()

    run(main())


def test_caller_cancellation_propagates() -> None:
    """Cancelling the probing task is a cancellation, not a failed probe."""

    async def main() -> None:
        reached = asyncio.Event()
        async with serve(hanging_server(reached)) as target, ChannelPool() as pool:
            probe = asyncio.create_task(pool.get_model_status(target, "mnist", timeout=30))
            await asyncio.wait_for(reached.wait(), timeout=5)
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe

    run(main())


@pytest.mark.tensorflow
def test_pool_recovers_when_server_comes_back(tfs: SimpleNamespace) -> None:
    """A pooled channel that failed to connect serves again once the server is back.

    The pool keeps the channel, so this depends on gRPC's reconnect backoff,
    which CHANNEL_OPTIONS caps at 5 s (gRPC's own cap is 120 s).
    """
    port = free_port()
    target = f"127.0.0.1:{port}"
    service = tfs.Service(on_status=status_response(tfs, (1, "AVAILABLE", "OK", "")))

    async def main() -> float:
        async with ChannelPool() as pool:
            with pytest.raises(ServerUnreachable):
                await pool.get_model_status(target, "mnist")
            async with serve(tfs.register(service), port=port):
                loop = asyncio.get_running_loop()
                start = loop.time()
                while True:
                    try:
                        await pool.get_model_status(target, "mnist")
                        return loop.time() - start
                    except ServerUnreachable:
                        # Polling for the reconnect, which backoff timing decides.
                        assert loop.time() - start < 10, "no reconnect within 10 s"
                        await asyncio.sleep(0.1)

    assert run(main()) < 7


def test_module_constants() -> None:
    assert f"/{SERVICE}/GetModelStatus" == client.GET_MODEL_STATUS_METHOD


def test_code_names_are_grpc_canonical_codes() -> None:
    """views.CODE_NAMES spells the table without importing grpc; it must match grpc's."""
    assert {code.value[0]: code.name for code in grpc.StatusCode} == CODE_NAMES


# --- failures no TF Serving build produces, and the pool's edges --------------------------------


class MisbehavingChannel:
    """Stands in for a grpc.aio channel where no real server can reach: a call
    that ignores its deadline, or a call that returns something other than
    bytes. Records (method, request, timeout) of each call."""

    def __init__(self, answer: Callable[[], Awaitable[object]]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, bytes, float]] = []

    def unary_unary(self, method: str) -> Callable[..., Awaitable[object]]:
        async def call(request: bytes, *, timeout: float) -> object:
            self.calls.append((method, request, timeout))
            return await self.answer()

        return call


def test_guard_ends_a_call_whose_deadline_is_not_enforced() -> None:
    """If gRPC's deadline never fires, the asyncio guard ends the probe as a timeout."""

    async def forever() -> object:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    channel = MisbehavingChannel(forever)

    async def main() -> None:
        # The outer bound only keeps a broken guard from hanging the test.
        await asyncio.wait_for(
            get_model_status("model-server:8500", "mnist", timeout=0.05, channel=channel),
            timeout=30,
        )

    with pytest.raises(ProbeTimeout) as caught:
        run(main())
    message = "model server model-server:8500 did not answer GetModelStatus in time"
    assert caught.value.message == str(caught.value) == message
    assert (caught.value.target, caught.value.details, caught.value.code) == (
        "model-server:8500",
        "",
        None,
    )
    assert isinstance(caught.value.__cause__, TimeoutError)
    ((method, request, timeout),) = channel.calls
    assert (method, timeout) == (client.GET_MODEL_STATUS_METHOD, 0.05)
    assert pb.GetModelStatusRequest.FromString(request).model_spec.name == "mnist"


def test_answer_that_is_not_bytes_is_probe_failed() -> None:
    async def text() -> object:
        return "not bytes"

    with pytest.raises(ProbeFailed) as caught:
        run(get_model_status("model-server:8500", "mnist", channel=MisbehavingChannel(text)))
    assert caught.value.message == (
        "GetModelStatus on model server model-server:8500 returned str, not bytes"
    )
    assert caught.value.target == "model-server:8500"


def test_closed_channel_is_probe_failed() -> None:
    """A call on a channel closed under it (its target dropped from a pool)."""

    async def main() -> None:
        async with ChannelPool() as pool:
            channel = pool.channel("127.0.0.1:1")
        assert pool.closed
        await get_model_status("127.0.0.1:1", "mnist", channel=channel)

    with pytest.raises(ProbeFailed) as caught:
        run(main())
    assert isinstance(caught.value.__cause__, grpc.aio.UsageError)
    gone = str(caught.value.__cause__)
    assert gone  # grpc's words, e.g. "Channel is closed."
    assert caught.value.message == f"GetModelStatus on model server 127.0.0.1:1 failed: {gone}"
    assert (caught.value.target, caught.value.details) == ("127.0.0.1:1", gone)


@pytest.mark.parametrize(
    ("length", "shown"),
    [(1024, "x" * 1024), (1025, "x" * 1024 + "...")],
    ids=["at-the-limit", "one-over"],
)
def test_long_server_text_is_clipped_in_the_message(length: int, shown: str) -> None:
    """Condition messages carry at most 1024 characters of the server's text; details all."""
    text = "x" * length

    async def not_found(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, text)
        raise AssertionError("unreachable: abort raises")

    targets: list[str] = []

    async def main() -> None:
        async with serve(raw_handlers(GetModelStatus=not_found)) as target:
            targets.append(target)
            await get_model_status(target, "mnist")

    with pytest.raises(ModelNotFound) as caught:
        run(main())
    assert caught.value.message == f"model server {targets[0]}: {shown}"
    assert caught.value.details == text


async def empty_status(request: bytes, context: Any) -> bytes:
    return bytes(pb.GetModelStatusResponse().SerializeToString())


@pytest.mark.parametrize("pooled", [False, True], ids=["one-off-channel", "pool"])
def test_probes_do_not_go_through_an_http_proxy(
    pooled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator pod given a proxy for outside access still probes model
    servers directly (CHANNEL_OPTIONS reach every channel): here the proxy
    is a closed port, so a probe sent through it would fail."""
    for name in ("no_grpc_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("grpc_proxy", f"http://127.0.0.1:{free_port()}")

    async def main() -> list[VersionStatus]:
        async with serve(raw_handlers(GetModelStatus=empty_status)) as target:
            if not pooled:
                return await get_model_status(target, "mnist")
            async with ChannelPool() as pool:
                return await pool.get_model_status(target, "mnist")

    assert run(main()) == []


def test_pool_probe_passes_its_arguments() -> None:
    """What the pool's probe sends: the model, version or label, and its deadline;
    and a failure names the target and the call."""
    seen: list[tuple[bytes, float]] = []

    async def answer(request: bytes, context: Any) -> bytes:
        seen.append((request, context.time_remaining()))
        if len(seen) == 3:
            await context.abort(grpc.StatusCode.INTERNAL, "boom")
        return bytes(pb.GetModelStatusResponse().SerializeToString())

    async def main() -> str:
        async with serve(raw_handlers(GetModelStatus=answer)) as target, ChannelPool() as pool:
            await pool.get_model_status(target, "mnist", version=3, timeout=20)
            await pool.get_model_status(target, "mnist", label="canary", timeout=20)
            with pytest.raises(ProbeFailed) as caught:
                await pool.get_model_status(target, "mnist", timeout=20)
            assert caught.value.message == (
                f"GetModelStatus on model server {target} failed: INTERNAL: boom"
            )
            assert caught.value.target == target
            return target

    run(main())
    specs = [pb.GetModelStatusRequest.FromString(request).model_spec for request, _ in seen]
    assert [(s.name, s.WhichOneof("version_choice")) for s in specs] == [
        ("mnist", "version"),
        ("mnist", "version_label"),
        ("mnist", None),
    ]
    assert (specs[0].version.value, specs[1].version_label) == (3, "canary")
    # The deadline the server sees is the pool caller's 20 s, not the 2 s default
    # (gRPC rounds the grpc-timeout header up, so it can read a little over 20).
    assert all(10 < remaining < 21 for _, remaining in seen), seen


def test_pool_close_survives_a_channel_that_fails_to_close(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing one channel failing must not stop the others closing, nor raise."""
    real_new_channel = client._new_channel
    closed: list[str] = []

    class FailsToClose:
        def __init__(self, target: str, options: Any) -> None:
            self.target = target
            self.real = real_new_channel(target, options)

        async def close(self, grace: float | None = None) -> None:
            await self.real.close(grace)
            closed.append(self.target)
            if self.target.startswith("bad"):
                raise RuntimeError(f"cannot close {self.target}")

    monkeypatch.setattr(client, "_new_channel", FailsToClose)

    async def main() -> None:
        pool = ChannelPool()
        for target in ("bad-1:8500", "good:8500", "bad-2:8500", "bad-3:8500"):
            pool.channel(target)
        await pool.discard("bad-3:8500")
        await pool.close()

    with caplog.at_level(logging.WARNING, logger="tfserving_operator.wire.client"):
        run(main())
    assert sorted(closed) == ["bad-1:8500", "bad-2:8500", "bad-3:8500", "good:8500"]
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"closing a model server channel failed: RuntimeError('cannot close bad-{n}:8500')"
        for n in (1, 2, 3)
    ]


def test_wait_for_port_gives_up_on_a_closed_port() -> None:
    target = f"127.0.0.1:{free_port()}"

    async def main() -> tuple[bool, frozenset[str]]:
        async with ChannelPool() as pool:
            opened = await pool.wait_for_port(target, 0.5)
            return opened, pool.targets

    assert run(main()) == (False, frozenset())


def test_wait_for_port_returns_when_the_port_opens_and_keeps_the_channel(
    tfs: SimpleNamespace,
) -> None:
    """The real server opens its port once its versions have loaded: the wait
    ends then, and the probe that follows uses the channel it connected."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    service = tfs.Service(on_status=status_response(tfs, (1, "AVAILABLE", "OK", "")))

    async def main() -> tuple[bool, list[VersionStatus]]:
        async with ChannelPool() as pool:
            waiting = asyncio.create_task(pool.wait_for_port(target, 20))
            # While the port stays closed the wait does not end.
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done
            async with serve(tfs.register(service), port=port):
                opened = await waiting
                assert pool.targets == {target}
                connected = pool.channel(target)
                statuses = await pool.get_model_status(target, "mnist")
                assert pool.channel(target) is connected
                return opened, statuses

    opened, statuses = run(main())
    assert opened
    assert [s.version for s in statuses] == [1]


def test_wait_for_port_keeps_a_channel_a_call_opened_meanwhile(tfs: SimpleNamespace) -> None:
    """Replacing the pool's channel would cancel a call in flight on it."""
    service = tfs.Service(on_status=status_response(tfs, (1, "AVAILABLE", "OK", "")))

    async def main() -> bool:
        async with serve(tfs.register(service)) as target, ChannelPool() as pool:
            existing = pool.channel(target)
            opened = await pool.wait_for_port(target, 5)
            assert pool.channel(target) is existing
            return opened

    assert run(main())


def test_wait_for_port_on_a_closed_pool_is_false() -> None:
    async def main() -> bool:
        pool = ChannelPool()
        await pool.close()
        return await pool.wait_for_port("127.0.0.1:1", 1)

    assert run(main()) is False
