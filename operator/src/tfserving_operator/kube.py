"""The one transport to the Kubernetes API: raw JSON requests, off the event loop.

Why not the generated typed API classes: they build and validate pydantic
models for every object (slow at the scale we run, and lossy for fields the
client does not know); the operator works with plain dicts it renders
itself. The kubernetes package still does the hard parts (kubeconfig,
in-cluster config, TLS, tokens, connection pooling); this adds paths and a
thread pool. Writes go through apply.py only; this module has no opinion.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import urllib3

from tfserving_operator.kinds import BY_KIND
from tfserving_operator.metrics import CODE_NO_ANSWER, METRICS, Metrics

# apimachinery's fieldmanager: the prefix of a server-side apply body that
# does not fit the kind's structured schema.
TYPED_PATCH_FAILURE = "failed to create typed patch object"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.reason = str(body.get("reason", ""))
        self.message = str(body.get("message", body))
        super().__init__(f"HTTP {status} {self.reason}: {self.message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def refuses_input(self) -> bool:
        """The API server refuses this body as such: sending it again cannot help.

        Besides 400/403/422, server-side apply answers a body it cannot even
        type-check against the kind's schema (a repeated key in a list-map such
        as env or imagePullSecrets, a wrongly typed field) with HTTP 500 and
        this message, although retrying the same body fails the same way.
        """
        if self.status in (400, 403, 422):
            return True
        return self.status == 500 and TYPED_PATCH_FAILURE in self.message


def path_for(kind: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    """REST path of a namespaced object (or collection when name is None)."""
    info = BY_KIND[kind]
    prefix, plural = info.path_prefix, info.plural
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def wire_body(body: Any) -> bytes:
    """A request body as the API server must receive it: JSON in UTF-8.

    The kubernetes client serializes with json.dumps' default ensure_ascii,
    which writes a character beyond U+FFFF (an emoji in an annotation) as a
    surrogate pair escape; the API server decodes server-side apply bodies
    (application/apply-patch+yaml) as YAML, whose decoder refuses that escape
    ("invalid Unicode character escape code"). Plain UTF-8 is valid JSON and
    YAML, except for the characters the API server's YAML decoder (go-yaml,
    YAML 1.1) refuses raw or reads as line breaks to fold (DEL, the C1
    controls with NEL, the line and paragraph separators, a byte order mark,
    U+FFFE/U+FFFF, lone surrogates): those stay \\u escapes, which it reads
    inside a quoted string.
    """
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


# json.dumps already escapes the C0 controls; these occur only inside JSON
# strings, where a \\u escape means the same.
_YAML_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def prepare(
    api_client: Any,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    content_type: str | None = None,
) -> tuple[str, str, dict[str, str]]:
    """(method, URL, headers) of one request, as the client builds them: the
    server's address, the query, and the authentication headers (tokens
    refreshed)."""
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    method, url, headers, _, _ = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=list(query),
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    return method, url, headers


def send(
    api_client: Any,
    method: str,
    path: str,
    body: Any = None,
    content_type: str | None = None,
    query: Iterable[tuple[str, str]] = (),
    timeout: float = 30.0,
) -> tuple[int, dict[str, Any]]:
    """One blocking request: (HTTP status, decoded body); never raises for a status.

    The client still builds the URL and the authentication headers (and
    refreshes tokens); a body goes out as `wire_body` bytes straight through
    its connection pool, because its own serializer would re-encode them.
    """
    method, url, headers = prepare(api_client, method, path, query, content_type)
    if body is None:
        response = api_client.call_api(method, url, headers, _request_timeout=timeout)
        response.read()
        status, raw = int(response.status), response.data
    else:
        answer = api_client.rest_client.pool_manager.request(
            method,
            url,
            body=wire_body(body),
            headers=headers,
            timeout=urllib3.Timeout(total=timeout),
        )
        status, raw = int(answer.status), answer.data
    return status, (json.loads(raw) if raw else {})


class Kube:
    """Sends requests with a kubernetes.client.ApiClient from a thread pool."""

    def __init__(self, api_client: Any, workers: int = 16, metrics: Metrics = METRICS) -> None:
        self._client = api_client
        self._metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        # urllib3 keeps one connection per worker thread at most.
        api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = workers
        # Requests other than GET sent since start: who writes (peering tests
        # count the writers; kopf's own keep-alives do not go through here).
        self.writes = 0

    def close(self) -> None:
        """Stop the thread pool (outstanding requests finish)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: Iterable[tuple[str, str]] = (),
        timeout: float = 30.0,
        ok_statuses: Iterable[int] = (),
    ) -> dict[str, Any]:
        """Send one request; return the decoded body or raise ApiError."""
        loop = asyncio.get_running_loop()
        if method != "GET":
            self.writes += 1
        try:
            status, data = await loop.run_in_executor(
                self._pool,
                send,
                self._client,
                method,
                path,
                body,
                content_type,
                list(query),
                timeout,
            )
        except Exception:
            self._metrics.observe_request(method, CODE_NO_ANSWER)
            raise
        self._metrics.observe_request(method, status)
        if status >= 400 and status not in set(ok_statuses):
            raise ApiError(status, data)
        return data
