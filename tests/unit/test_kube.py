"""kube.Kube, the one transport, with a real kubernetes ApiClient against a
local HTTP server that records each request and answers what the test says.

What is checked is what the API server would see (method, path, query,
headers, body bytes) and what the caller gets back (the decoded body, or
ApiError for a refusal it did not list as fine), plus one count per request
in the operator's metrics.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from kubernetes import client as k8s

from tfserving_operator.kube import ApiError, Kube, path_for
from tfserving_operator.metrics import CODE_NO_ANSWER, Metrics


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """What to answer next, and every request received."""

    status: int = 200
    body: bytes = b"{}"
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


def handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            server.seen.append(
                Seen(
                    self.command,
                    parts.path,
                    parse_qsl(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
            )
            self.send_response(server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # pytest shows failures; the request log is noise

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    # A short poll interval: shutdown() waits for the loop to look up.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def kube_for(url: str, metrics: Metrics, workers: int = 4) -> Kube:
    configuration = k8s.Configuration(host=url)
    return Kube(k8s.ApiClient(configuration), workers=workers, metrics=metrics)


def requests(metrics: Metrics, verb: str, code: int | str) -> float:
    labels = {"verb": verb, "code": str(code)}
    return metrics.registry.get_sample_value("tfserving_operator_api_requests_total", labels) or 0


def test_a_patch_reaches_the_server_as_sent(server: Server) -> None:
    server.body = b'{"metadata": {"resourceVersion": "7"}}'
    metrics = Metrics()
    kube = kube_for(server.url, metrics)
    body = {"kind": "ConfigMap", "data": {"k": "v"}}
    answer = asyncio.run(
        kube.request(
            "PATCH",
            "/api/v1/namespaces/team-a/configmaps/c",
            body=body,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", "tfso"), ("force", "true")],
        )
    )
    kube.close()
    assert answer == {"metadata": {"resourceVersion": "7"}}
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("PATCH", "/api/v1/namespaces/team-a/configmaps/c")
    assert seen.query == [("fieldManager", "tfso"), ("force", "true")]
    assert seen.headers["content-type"] == "application/apply-patch+yaml"
    assert seen.headers["accept"] == "application/json"
    assert json.loads(seen.body) == body
    assert requests(metrics, "PATCH", 200) == 1


def test_a_get_sends_no_body_and_no_content_type(server: Server) -> None:
    kube = kube_for(server.url, Metrics())
    asyncio.run(kube.request("GET", "/api/v1/namespaces/team-a/pods"))
    kube.close()
    (seen,) = server.seen
    assert (seen.method, seen.query, seen.body) == ("GET", [], b"")
    assert "content-type" not in seen.headers


def test_an_empty_answer_is_an_empty_dict(server: Server) -> None:
    server.body = b""
    kube = kube_for(server.url, Metrics())
    assert asyncio.run(kube.request("DELETE", "/api/v1/namespaces/team-a/pods/p")) == {}
    kube.close()


def test_a_refusal_raises_with_the_servers_reason_and_is_counted(server: Server) -> None:
    server.status = 422
    server.body = b'{"reason": "Invalid", "message": "spec.replicas: must be >= 0"}'
    metrics = Metrics()
    kube = kube_for(server.url, metrics)
    with pytest.raises(ApiError) as refused:
        asyncio.run(kube.request("PATCH", "/api/v1/namespaces/team-a/services/s", body={}))
    kube.close()
    error = refused.value
    assert (error.status, error.reason, error.not_found) == (422, "Invalid", False)
    assert error.message == "spec.replicas: must be >= 0"
    assert str(error) == "HTTP 422 Invalid: spec.replicas: must be >= 0"
    assert requests(metrics, "PATCH", 422) == 1


@pytest.mark.parametrize("status", [400, 404, 409, 500])
def test_every_status_from_400_up_raises_unless_listed(server: Server, status: int) -> None:
    server.status = status
    server.body = b'{"reason": "R"}'
    kube = kube_for(server.url, Metrics())
    with pytest.raises(ApiError) as refused:
        asyncio.run(kube.request("GET", "/api/v1/pods"))
    assert refused.value.status == status
    assert refused.value.not_found == (status == 404)
    answer = asyncio.run(kube.request("GET", "/api/v1/pods", ok_statuses=[status]))
    kube.close()
    assert answer == {"reason": "R"}


def test_a_3xx_answer_is_not_an_error(server: Server) -> None:
    # Nothing below 400 is a refusal (the boundary of `status >= 400`).
    server.status = 399
    kube = kube_for(server.url, Metrics())
    assert asyncio.run(kube.request("GET", "/api/v1/pods")) == {}
    kube.close()


def test_an_error_without_a_message_shows_the_whole_body() -> None:
    error = ApiError(500, {"code": 500})
    assert (error.reason, error.message) == ("", "{'code': 500}")


def test_no_answer_is_counted_and_raised() -> None:
    metrics = Metrics()
    # Nothing listens on port 9 of localhost (discard, never served here).
    kube = kube_for("http://127.0.0.1:9", metrics)
    with pytest.raises(Exception) as failed:
        asyncio.run(kube.request("GET", "/api/v1/pods", timeout=5))
    kube.close()
    assert not isinstance(failed.value, ApiError)
    assert requests(metrics, "GET", CODE_NO_ANSWER) == 1


def test_the_connection_pool_is_sized_to_the_workers(server: Server) -> None:
    api_client = k8s.ApiClient(k8s.Configuration(host=server.url))
    kube = Kube(api_client, workers=3, metrics=Metrics())
    assert api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] == 3
    kube.close()


def test_requests_run_concurrently_on_the_pool(server: Server) -> None:
    kube = kube_for(server.url, Metrics(), workers=4)

    async def many() -> list[dict[str, Any]]:
        return await asyncio.gather(*(kube.request("GET", f"/api/v1/p{i}") for i in range(8)))

    assert asyncio.run(many()) == [{}] * 8
    kube.close()
    assert sorted(s.path for s in server.seen) == sorted(f"/api/v1/p{i}" for i in range(8))


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (("Pod", "ns", None), "/api/v1/namespaces/ns/pods"),
        (("Pod", None, None), "/api/v1/pods"),
        (("Pod", "", "p"), "/api/v1/pods/p"),
        (("Deployment", "ns", "d"), "/apis/apps/v1/namespaces/ns/deployments/d"),
        (("ServedModel", "ns", "m", "status"), None),
    ],
)
def test_path_for(args: tuple[Any, ...], path: str | None) -> None:
    got = path_for(*args)
    if path is None:
        assert got.endswith("/namespaces/ns/servedmodels/m/status"), got
        assert got.startswith("/apis/"), got
    else:
        assert got == path


@pytest.fixture
def hanging() -> Iterator[tuple[str, threading.Event]]:
    """A server that accepts requests and answers none until the test ends."""
    release = threading.Event()

    class Hang(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(30)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", release
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_the_token_goes_in_the_authorization_header(server: Server) -> None:
    configuration = k8s.Configuration(host=server.url)
    configuration.api_key = {"BearerToken": "Bearer t0ken"}
    kube = Kube(k8s.ApiClient(configuration), metrics=Metrics())
    asyncio.run(kube.request("GET", "/api/v1/pods"))
    kube.close()
    assert server.seen[0].headers["authorization"] == "Bearer t0ken"


def test_a_server_that_does_not_answer_times_out(hanging: tuple[str, threading.Event]) -> None:
    metrics = Metrics()
    kube = kube_for(hanging[0], metrics)
    with pytest.raises(Exception) as failed:
        asyncio.run(kube.request("GET", "/api/v1/pods", timeout=0.2))
    kube.close()
    assert "timed out" in str(failed.value).lower(), failed.value
    assert requests(metrics, "GET", CODE_NO_ANSWER) == 1


def test_requests_run_on_the_named_pool_of_the_given_size(server: Server) -> None:
    threads: list[str] = []
    api_client = k8s.ApiClient(k8s.Configuration(host=server.url))
    call_api = api_client.call_api

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return call_api(*args, **kwargs)

    api_client.call_api = recording
    kube = Kube(api_client, workers=2, metrics=Metrics())

    async def three() -> None:
        await asyncio.gather(*(kube.request("GET", "/api/v1/pods") for _ in range(3)))

    asyncio.run(three())
    kube.close()
    assert all(name.startswith("kube") for name in threads), threads
    assert len(set(threads)) <= 2, threads


def test_close_returns_at_once_and_drops_queued_requests(
    hanging: tuple[str, threading.Event],
) -> None:
    kube = kube_for(hanging[0], Metrics(), workers=1)

    async def scenario() -> None:
        stuck = asyncio.ensure_future(kube.request("GET", "/api/v1/a", timeout=20))
        queued = asyncio.ensure_future(kube.request("GET", "/api/v1/b", timeout=20))
        await asyncio.sleep(0)  # both handed to the pool: one runs, one waits for it
        closer = threading.Thread(target=kube.close)
        closer.start()
        closer.join(timeout=10)
        assert not closer.is_alive(), "close() waited for the request in flight"
        with pytest.raises(asyncio.CancelledError):
            await queued
        stuck.cancel()

    asyncio.run(scenario())
